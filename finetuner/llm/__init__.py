"""LLM fine-tuning: the `FineTuner` class (LoRA / QLoRA for causal and seq2seq models).

    from finetuner.llm import FineTuner
    tuner = FineTuner("smollm2", dataset_name="lima", max_length=512)
    tuner.train("runs/smollm2-lima", num_train_epochs=1)
    print(tuner.generate("How do I boil an egg?"))

Pluggable parts: `Preprocessor` (data -> tokens), `TrainerConfig` (how to train, on finetuner's
engine), `InferenceHandler` (prompt -> text). `merge` writes a plain model with the adapter
folded in.
"""

from .config import DefaultTrainerConfig, TrainerConfig
from .inference import DefaultInferenceHandler, InferenceHandler
from ..models.lora import merge
from .preprocess import DefaultPreprocessor, Preprocessor
from .tuner import FineTuner

__all__ = ["DefaultInferenceHandler", "DefaultPreprocessor", "DefaultTrainerConfig", "FineTuner",
           "InferenceHandler", "Preprocessor", "TrainerConfig", "merge"]
