"""Where and how a network runs: CPU precision, graph fusions, torch.compile's cache, ONNX Runtime exports."""
