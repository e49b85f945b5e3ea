"""Run outputs: metrics writers (W&B, JSONL, console) and sample grids."""
