"""Models: the directly trained spiking UNet, ANN presets, loading pretrained checkpoints, training recipes."""
