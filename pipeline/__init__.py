"""Configuration, command line and wiring of the GANomaly pipeline stages."""
