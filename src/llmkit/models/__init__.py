"""Language models written here in PyTorch: configs and presets, attention, GPT."""
