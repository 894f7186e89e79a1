"""Packaging for the GANomaly inspection pipeline.

pip install -e '.[dev]'      # what `make train` and `make test` run for you
pip install --no-deps tensorflow-serving-api==2.21.0   # the tests' TF Serving protos (make does it)

tensorflow-serving-api cannot be an extra: it requires `tensorflow`, the GPU build, which
would be installed beside tensorflow-cpu. Its protos need only what tensorflow-cpu brings.
"""

from setuptools import find_packages, setup

setup(
    name="ganomaly-inspection",
    version="0.1.0",
    description="Defect detection and localization with GANomaly on Keras 3 / TensorFlow",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pipeline*", "components*", "models*", "benchmarks*"]),
    package_data={"configs": ["*.yaml"]},
    install_requires=[
        "tensorflow-cpu==2.21.0",
        "keras==3.15.1",
        "mlflow==3.17.2",
        "numpy>=1.26,<3",
        "pandas>=2.1,<4",
        "matplotlib>=3.8,<4",
        "scikit-learn>=1.4,<2",
        "scipy>=1.11,<2",
        "pillow>=10,<14",
        "pyyaml>=6,<7",
        "mlxtend>=0.23,<1",
    ],
    extras_require={
        "gpu": ["tensorflow==2.21.0"],
        "elpv": ["elpv-dataset>=1.0"],
        "dev": [
            "pytest>=8,<10",
            "pytest-xdist>=3.6,<4",  # make test: two workers, one module each at a time
            "ruff>=0.6",
            "scikit-image>=0.22,<1",
            "opencv-python-headless>=4.8",
            "nbformat>=5.9,<6",
            "nbclient>=0.10,<1",
            "ipykernel>=6.29,<8",
        ],
    },
    entry_points={"console_scripts": ["ganomaly=pipeline.cli:main"]},
)
