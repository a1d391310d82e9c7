"""One way in for user data: readers, the labeled formats and `LabeledData`, the relation rule,
samplers, datasets and collate, classifier rows and instruction data."""
