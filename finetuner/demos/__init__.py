"""End-to-end demos on real data: `finetuner demo NAME`. Each module has `run(data_dir,
output_dir, epochs, quick)`."""
