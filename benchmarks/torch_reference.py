"""python -m benchmarks.torch_reference: the PyTorch original's speed, next to ``benchmarks.model``.

    python -m benchmarks.torch_reference [--steps 12] [--rounds 3] [--threads 2]

Run it from the repository root with a Python that has torch and numpy, e.g. a
venv of its own: ``python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install
torch==2.13.0 numpy`` (a CPU build of torch), then ``/tmp/torchenv/bin/python -m
benchmarks.torch_reference``. Measures the original GANomaly
(github.com/samet-akcay/ganomaly, ``lib/networks.py`` and ``lib/model.py``) as
vendored below, on random uniform(-1, 1) inputs with its default networks (nz 100,
ngf = ndf 64, no extra layers, batch 64, float32) at 32x32x1 and 64x64x3: training
images/s of its ``optimize_params`` step, generator (encoder, decoder, encoder)
inference images/s in eval mode under ``torch.no_grad()``, and the generator's
batch-1 latency on one 64x64x3 image. Warm-up steps are excluded; each figure is
the median over ``--rounds`` rounds of the median step. Prints one JSON object,
last on its output, with ``benchmarks.model``'s key names so that the two
compare key by key. Importing this module needs neither torch nor numpy.

The networks and the training step are a minimal copy of the original's:

    MIT License
    Copyright (c) 2018 Samet Akcay, Durham University, UK

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from benchmarks.model import BATCH, median_seconds, round_medians, speed_round

CONFIGS = {"32x1": (32, 1), "64x3": (64, 3)}
# The original's defaults (options.py); its NetD is built with ngf, not ndf.
NETWORKS = {"nz": 100, "ngf": 64, "ndf": 64}
# options.py: lr, beta1, w_adv, w_con, w_enc.
LR, BETA1 = 2e-4, 0.5
W_ADV, W_CON, W_ENC = 1.0, 50.0, 1.0


def weights_init(mod) -> None:
    """``lib/networks.py``'s init: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    classname = mod.__class__.__name__
    if classname.find("Conv") != -1:
        mod.weight.data.normal_(0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        mod.weight.data.normal_(1.0, 0.02)
        mod.bias.data.fill_(0)


def encoder(isize: int, nz: int, nc: int, ndf: int):
    """``Encoder(...).main`` of ``lib/networks.py``, without extra layers."""
    from torch import nn  # noqa: PLC0415

    layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    csize, cndf = isize / 2, ndf
    while csize > 4:
        layers += [
            nn.Conv2d(cndf, cndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(cndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        cndf, csize = cndf * 2, csize / 2
    layers.append(nn.Conv2d(cndf, nz, 4, 1, 0, bias=False))
    return nn.Sequential(*layers)


def decoder(isize: int, nz: int, nc: int, ngf: int):
    """``Decoder(...).main`` of ``lib/networks.py``, without extra layers."""
    from torch import nn  # noqa: PLC0415

    cngf, tisize = ngf // 2, 4
    while tisize != isize:
        cngf, tisize = cngf * 2, tisize * 2
    layers = [
        nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False),
        nn.BatchNorm2d(cngf),
        nn.ReLU(True),
    ]
    csize = 4
    while csize < isize // 2:
        layers += [
            nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(cngf // 2),
            nn.ReLU(True),
        ]
        cngf, csize = cngf // 2, csize * 2
    layers += [nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


@functools.cache
def networks() -> tuple[type, type]:
    """``NetG`` and ``NetD`` of ``lib/networks.py`` (defined once torch is imported)."""
    from torch import nn  # noqa: PLC0415

    class NetG(nn.Module):
        def __init__(self, isize: int, nc: int):
            super().__init__()
            nz, ngf = NETWORKS["nz"], NETWORKS["ngf"]
            self.encoder1 = encoder(isize, nz, nc, ngf)
            self.decoder = decoder(isize, nz, nc, ngf)
            self.encoder2 = encoder(isize, nz, nc, ngf)

        def forward(self, x):
            latent_i = self.encoder1(x)
            gen_imag = self.decoder(latent_i)
            latent_o = self.encoder2(gen_imag)
            return gen_imag, latent_i, latent_o

    class NetD(nn.Module):
        def __init__(self, isize: int, nc: int):
            super().__init__()
            layers = list(encoder(isize, 1, nc, NETWORKS["ngf"]).children())
            self.features = nn.Sequential(*layers[:-1])
            self.classifier = nn.Sequential(layers[-1], nn.Sigmoid())

        def forward(self, x):
            features = self.features(x)
            classifier = self.classifier(features).view(-1, 1).squeeze(1)
            return classifier, features

    return NetG, NetD


def l2_loss(input, target):  # noqa: A002 (the original's signature)
    """``lib/loss.py``'s ``l2_loss``: the mean squared difference."""
    import torch  # noqa: PLC0415

    return torch.mean(torch.pow((input - target), 2))


class Ganomaly:
    """The training step of ``lib/model.py``'s ``Ganomaly``: same losses, weights and order."""

    def __init__(self, isize: int, nc: int, batch: int = BATCH):
        import torch  # noqa: PLC0415

        net_g, net_d = networks()
        self.netg, self.netd = net_g(isize, nc), net_d(isize, nc)
        self.netg.apply(weights_init)
        self.netd.apply(weights_init)
        self.l_adv, self.l_con, self.l_enc = l2_loss, torch.nn.L1Loss(), l2_loss
        self.l_bce = torch.nn.BCELoss()
        self.real_label = torch.ones(size=(batch,), dtype=torch.float32)
        self.fake_label = torch.zeros(size=(batch,), dtype=torch.float32)
        self.netg.train()
        self.netd.train()
        self.optimizer_d = torch.optim.Adam(self.netd.parameters(), lr=LR, betas=(BETA1, 0.999))
        self.optimizer_g = torch.optim.Adam(self.netg.parameters(), lr=LR, betas=(BETA1, 0.999))
        self.input = None
        self.reinits = 0

    def forward_g(self) -> None:
        self.fake, self.latent_i, self.latent_o = self.netg(self.input)

    def forward_d(self) -> None:
        self.pred_real, self.feat_real = self.netd(self.input)
        self.pred_fake, self.feat_fake = self.netd(self.fake.detach())

    def backward_g(self) -> None:
        self.err_g_adv = self.l_adv(self.netd(self.input)[1], self.netd(self.fake)[1])
        self.err_g_con = self.l_con(self.fake, self.input)
        self.err_g_enc = self.l_enc(self.latent_o, self.latent_i)
        self.err_g = self.err_g_adv * W_ADV + self.err_g_con * W_CON + self.err_g_enc * W_ENC
        self.err_g.backward(retain_graph=True)

    def backward_d(self) -> None:
        self.err_d_real = self.l_bce(self.pred_real, self.real_label)
        self.err_d_fake = self.l_bce(self.pred_fake, self.fake_label)
        self.err_d = (self.err_d_real + self.err_d_fake) * 0.5
        self.err_d.backward()

    def reinit_d(self) -> None:
        """Re-initialises netD (its Adam state is kept, as in the original)."""
        self.netd.apply(weights_init)
        self.reinits += 1
        print("   Reloading net d", file=sys.stderr)  # stdout in the original

    def optimize_params(self) -> None:
        """One training step, in the original's order."""
        self.forward_g()
        self.forward_d()
        self.optimizer_g.zero_grad()
        self.backward_g()
        self.optimizer_g.step()
        self.optimizer_d.zero_grad()
        self.backward_d()
        self.optimizer_d.step()
        if self.err_d.item() < 1e-5:
            self.reinit_d()


def _images(n: int, isize: int, channels: int):
    """Uniform(-1, 1) float32 images, NCHW as the original takes them."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.uniform(-1, 1, (n, channels, isize, isize)).astype("float32"))


def _model(isize: int, channels: int, batch: int = BATCH) -> Ganomaly:
    import torch  # noqa: PLC0415

    torch.manual_seed(0)
    return Ganomaly(isize, channels, batch)


def train_img_s(isize: int, channels: int, steps: int) -> float:
    """Images/s of the original's ``optimize_params``, batch 64: the median step."""
    model = _model(isize, channels)
    model.input = _images(BATCH, isize, channels)
    return BATCH / median_seconds(model.optimize_params, steps)


def infer_img_s(isize: int, channels: int, steps: int) -> float:
    """Generator images/s in eval mode under ``torch.no_grad()``, batch 64: the median call."""
    netg = _model(isize, channels).netg.eval()
    images = _images(BATCH, isize, channels)
    return BATCH / median_seconds(_no_grad(netg, images), steps)


def latency_ms_b1(isize: int, channels: int, repeats: int = 50) -> float:
    """Median milliseconds of one eval-mode generator forward on one image."""
    netg = _model(isize, channels).netg.eval()
    return 1000 * median_seconds(_no_grad(netg, _images(1, isize, channels)), repeats)


def _no_grad(netg, images):
    import torch  # noqa: PLC0415

    def forward():
        with torch.no_grad():
            return netg(images)

    return forward


def measure(steps: int, rounds: int) -> dict:
    """One dict of every figure, each the median over ``rounds``, and ``torch_version``."""
    import torch  # noqa: PLC0415

    def one_round() -> dict:
        return speed_round(CONFIGS, steps, train_img_s, infer_img_s, latency_ms_b1)

    return {**round_medians(rounds, one_round), "torch_version": torch.__version__}


def set_threads(threads: int) -> None:
    """Intra-op (and, while still possible, inter-op) threads of torch."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # torch already ran parallel work in this process
        pass


def parser() -> argparse.ArgumentParser:
    """The command line: ``--steps``, ``--rounds`` and ``--threads``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_reference")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per figure and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    set_threads(args.threads)
    print(json.dumps(measure(args.steps, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
