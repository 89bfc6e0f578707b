"""Fine-tuning MMDuet2 on the user's GPU: SFT, multi-turn GRPO with the PAUC reward, export to GGUF."""
