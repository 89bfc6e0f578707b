"""Where models come from: HF→GGUF conversion, quantization, the tiny test model, the local library."""
