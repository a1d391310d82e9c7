"""Embedding-space tuners with a scikit-learn API.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from finetuner.sklearn import SentenceEncoder, FeedForwardTuner

    pipe = make_pipeline(SentenceEncoder(), FeedForwardTuner(hidden_dim=200), LogisticRegression())
    pipe.fit(texts, labels).predict(new_texts)

Numeric tuners (input: embeddings, float [N, D]): `FeedForwardTuner` (hidden layer of a
classifier), `ContrastiveTuner` (contrastive head from class labels), `ContrastiveLearner`
(contrastive head from pairs, `fit(X1, X2, y)`). Text estimators: `SentenceEncoder` (texts ->
embeddings), `SbertTuner` / `SbertLearner` (fine-tune the encoder itself). All follow the
scikit-learn conventions (`__init__` only stores, `fit` returns self, learned state ends in `_`,
`get_params` / `set_params`, `partial_fit`, `get_feature_names_out`, `set_output`, pickling).
"""

from .contrastive import ContrastiveLearner, ContrastiveTuner
from .encoder import SentenceEncoder
from .feedforward import FeedForwardTuner
from .sbert import SbertLearner, SbertTuner

__all__ = ["ContrastiveLearner", "ContrastiveTuner", "FeedForwardTuner", "SbertLearner", "SbertTuner",
           "SentenceEncoder"]
