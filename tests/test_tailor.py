"""Tailor on plain torch models: display, cut (nested dotted names), every form of freeze,
pooling, projection heads, bad input. Real modules and real forward passes, no mocks."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
from torch import nn

import finetuner
from finetuner.models.tailor import CutOff, EmbeddingModel, display, freeze, pool, to_embedding_model


# ---- models --------------------------------------------------------------------------------
def mlp() -> nn.Sequential:
    """A classifier: 1x8x8 image -> 32 -> 16 -> 10 classes, with dropout before the classifier."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(16, 10))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x):
        return self.body(x)


class Net(nn.Module):
    """Nested custom modules: names like 'encoder.stages.1.body.0' (four dots)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.ModuleDict({"stages": nn.ModuleList([Block(3, 8), Block(8, 8), Block(8, 16)])})
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.classifier = nn.Linear(16, 5)

    def forward(self, x):
        for stage in self.encoder["stages"]:
            x = stage(x)
        return self.classifier(self.drop(self.pool(x).flatten(1)))


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x, x * 2


class ArgMax(nn.Module):
    def forward(self, x):
        return x.argmax(1, keepdim=True)


class Odd(nn.Module):
    """Layers whose output cannot be an embedding: a pair of tensors, integers, a layer used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.pair = TwoOutputs()
        self.act = nn.ReLU()
        self.ids = ArgMax()
        self.unused = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        a, b = self.pair(self.act(self.lin(x)))
        _ = self.ids(a)
        return self.out(self.act(a + b))


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


X_IMG = torch.rand(4, 3, 8, 8)


# ---- display -----------------------------------------------------------------------------
def test_display_lists_layers_in_forward_order_with_shapes_and_params(capsys):
    rows = display(mlp(), input_size=(1, 8, 8))
    assert [r["name"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    by = {r["name"]: r for r in rows}
    assert by["1"]["type"] == "Linear" and by["1"]["output_shape"] == (None, 32) and by["1"]["params"] == 64 * 32 + 32
    assert by["6"]["output_shape"] == (None, 10) and by["1"]["trainable"] == "yes" and by["2"]["trainable"] == "-"
    assert all(r["embedding"] for r in rows)
    out = capsys.readouterr().out
    assert "Linear" in out and "[B, 32]" in out and "embedding" in out


def test_display_nested_names_containers_and_embedding_column():
    net = Net()
    freeze(net, ["encoder.stages.0"])
    rows = display(net, input_size=(3, 8, 8), show=False)
    by = {r["name"]: r for r in rows}
    assert "encoder.stages.1.body.0" in by  # four dots
    assert by["encoder.stages.2.body.1"]["output_shape"] == (None, 16, 8, 8)
    assert by["encoder.stages.0"]["trainable"] == "frozen" and by["encoder"]["trainable"] == "partly"
    # containers never called themselves are listed where their first layer ran, and cannot be cut at
    names = [r["name"] for r in rows]
    assert names.index("encoder") < names.index("encoder.stages.0") < names.index("pool")
    assert by["encoder.stages"]["embedding"] is False and "container" in by["encoder.stages"]["reason"]
    assert by["pool"]["embedding"] is True and by["classifier"]["output_shape"] == (None, 5)
    assert [r["name"] for r in display(net, input_size=(3, 8, 8), depth=0, show=False)] == [
        "encoder", "pool", "drop", "classifier"]


def test_display_marks_layers_that_cannot_be_embeddings_and_guesses_input():
    rows = {r["name"]: r for r in display(Odd(), show=False)}  # first layer Linear(4, .): input guessed
    assert rows["lin"]["embedding"] is True
    assert rows["pair"]["embedding"] is False and "not one tensor" in rows["pair"]["reason"]
    assert rows["ids"]["embedding"] is False and "int64" in rows["ids"]["reason"]
    assert rows["act"]["embedding"] is False and "2 times" in rows["act"]["reason"]
    assert rows["unused"]["embedding"] is False and "not called" in rows["unused"]["reason"]


def test_display_without_a_runnable_input_leaves_shapes_blank():
    rows = {r["name"]: r for r in display(Net(), show=False)}  # a conv net: a common image size is found
    assert rows["pool"]["output_shape"] == (None, 16, 1, 1)
    blank = display(nn.Sequential(TwoOutputs()), show=False)
    assert blank[0]["embedding"] is None and blank[0]["output_shape"] is None


# ---- cutting ----------------------------------------------------------------------------
def test_default_layer_is_the_last_before_the_classifier_with_dropout_skipped():
    emb = to_embedding_model(mlp(), input_size=(1, 8, 8))
    assert emb.layer_name == "4"  # the ReLU after Linear(32, 16); Dropout "5" skipped, classifier "6" cut off
    assert isinstance(emb.backbone[5], CutOff) and isinstance(emb.backbone[6], CutOff)
    assert emb(torch.rand(3, 1, 8, 8)).shape == (3, 16)
    net = to_embedding_model(Net(), input_size=(3, 8, 8))
    assert net.layer_name == "pool" and net(X_IMG).shape == (4, 16)


def test_cut_at_a_nested_layer_with_many_dots_equals_the_manual_forward():
    net = Net()
    ref = copy.deepcopy(net).eval()
    emb = to_embedding_model(net, "encoder.stages.1.body.1", input_size=(3, 8, 8), pooling="flatten").eval()
    with torch.no_grad():
        manual = ref.encoder["stages"][1].body[1](ref.encoder["stages"][1].body[0](ref.encoder["stages"][0](X_IMG)))
        assert torch.allclose(emb(X_IMG), manual.flatten(1))
    # everything after the cut is gone, weights included
    assert isinstance(emb.backbone.encoder["stages"][2], CutOff)
    assert isinstance(emb.backbone.encoder["stages"][1].body[2], CutOff)
    assert isinstance(emb.backbone.classifier, CutOff)
    assert not any(n.startswith(("backbone.classifier", "backbone.encoder.stages.2")) for n, _ in emb.named_parameters())
    with pytest.raises(RuntimeError, match="removed by to_embedding_model"):
        emb.backbone.classifier(torch.rand(1, 16))


def test_output_dim_adds_a_linear_head_and_mlp_head_and_custom_head():
    emb = to_embedding_model(Net(), output_dim=7, input_size=(3, 8, 8))
    assert isinstance(emb.head, nn.Linear) and emb.head.in_features == 16 and emb(X_IMG).shape == (4, 7)
    emb = to_embedding_model(Net(), output_dim=7, projection_head="mlp", input_size=(3, 8, 8))
    assert isinstance(emb.head, nn.Sequential) and emb(X_IMG).shape == (4, 7)
    custom = nn.Sequential(nn.Linear(16, 3), nn.Tanh())
    emb = to_embedding_model(Net(), projection_head=custom, input_size=(3, 8, 8))
    assert emb.head is custom and emb(X_IMG).shape == (4, 3)


def test_pooling_reduces_each_shape_to_batch_by_dim():
    t = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.allclose(pool(t, "auto", mask)[1], t[1, 0])
    assert torch.allclose(pool(t, "mean", mask)[0], t[0, :2].mean(0))
    assert torch.allclose(pool(t, "max", mask)[0], t[0, 1])
    assert torch.allclose(pool(t, "cls"), t[:, 0]) and pool(t, "flatten").shape == (2, 12)
    maps = torch.rand(2, 5, 3, 3)
    assert torch.allclose(pool(maps), maps.mean((2, 3))) and pool(maps, "flatten").shape == (2, 45)
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "cls")
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "median")


# ---- freezing -----------------------------------------------------------------------------
def test_freeze_true_freezes_the_whole_backbone_and_only_the_head_trains():
    emb = to_embedding_model(Net(), freeze=True, output_dim=4, input_size=(3, 8, 8))
    assert trainable(emb) == {"head.weight", "head.bias"}
    assert emb.backbone_frozen


def test_freeze_list_of_names_freezes_biases_too():
    emb = to_embedding_model(Net(), freeze=["encoder.stages.0.body.0", "encoder.stages.1"], input_size=(3, 8, 8))
    params = dict(emb.named_parameters())
    assert not params["backbone.encoder.stages.0.body.0.bias"].requires_grad  # Jina's tailor left biases trainable
    assert not params["backbone.encoder.stages.0.body.0.weight"].requires_grad
    assert not params["backbone.encoder.stages.1.body.1.bias"].requires_grad  # a prefix: everything under it
    assert params["backbone.encoder.stages.0.body.1.weight"].requires_grad
    assert params["backbone.encoder.stages.2.body.0.bias"].requires_grad


def test_freeze_prefix_stops_at_dots_and_globs_and_parameter_names_work():
    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Linear(4, 4) for _ in range(12)])
    freeze(deep, ["1"])
    assert trainable(deep) == {f"{i}.{w}" for i in range(12) if i != 1 for w in ("weight", "bias")}  # "10", "11" untouched
    deep = nn.Sequential(*[nn.Linear(4, 4) for _ in range(12)])
    frozen = freeze(deep, ["1?", "0.bias"])  # glob: 10 and 11; one parameter of layer 0
    assert set(frozen) == {"10.weight", "10.bias", "11.weight", "11.bias", "0.bias"}
    assert deep[0].weight.requires_grad


def test_freeze_int_counts_layers_in_forward_order_and_the_head_as_one():
    # Net holds 7 layers with weights in forward order: 3 x (conv, bn) + classifier; cut at pool: 6 remain
    emb = to_embedding_model(Net(), freeze=2, output_dim=4, input_size=(3, 8, 8))
    assert trainable(emb) == {f"backbone.encoder.stages.{i}.body.{j}.{w}" for i in (1, 2) for j in (0, 1)
                              for w in ("weight", "bias")} | {"head.weight", "head.bias"}
    # -1: everything but the last layer, the new head
    emb = to_embedding_model(Net(), freeze=-1, output_dim=4, input_size=(3, 8, 8))
    assert trainable(emb) == {"head.weight", "head.bias"}
    # -2: the head and the last backbone layer (stage 2's batch norm) train
    emb = to_embedding_model(Net(), freeze=-2, output_dim=4, input_size=(3, 8, 8))
    assert trainable(emb) == {"head.weight", "head.bias", "backbone.encoder.stages.2.body.1.weight",
                              "backbone.encoder.stages.2.body.1.bias"}
    # without a head, -1 leaves the last backbone layer trainable
    emb = to_embedding_model(Net(), freeze=-1, input_size=(3, 8, 8))
    assert trainable(emb) == {"backbone.encoder.stages.2.body.1.weight", "backbone.encoder.stages.2.body.1.bias"}
    # 0 freezes nothing
    assert len(trainable(to_embedding_model(Net(), freeze=0, input_size=(3, 8, 8)))) == 12


def test_freeze_int_order_follows_the_forward_pass_not_registration():
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.last = nn.Linear(4, 2)
            self.first = nn.Linear(3, 4)

        def forward(self, x):
            return self.last(self.first(x))

    m = Backwards()
    freeze(m, 1, input_size=(3,))
    assert trainable(m) == {"last.weight", "last.bias"}


def test_frozen_layers_keep_batch_norm_statistics_and_no_dropout_while_training():
    emb = to_embedding_model(Net(), freeze=True, output_dim=4, input_size=(3, 8, 8))
    emb.train()
    bn = emb.backbone.encoder["stages"][0].body[1]
    before = bn.running_mean.clone()
    opt = torch.optim.SGD([p for p in emb.parameters() if p.requires_grad], lr=0.1)
    emb(torch.rand(6, 3, 8, 8) * 5).sum().backward()
    opt.step()
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert emb.head.training
    # a frozen prefix is deterministic in train mode: the same input gives the same output
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(emb.features(x), emb.features(x))
    # trainable layers do train: batch norm in a trainable stage updates its statistics
    part = to_embedding_model(Net(), freeze=["encoder.stages.0"], input_size=(3, 8, 8)).train()
    bn2 = part.backbone.encoder["stages"][1].body[1]
    stats = bn2.running_mean.clone()
    part(torch.rand(6, 3, 8, 8) * 5)
    assert bn2.training and not torch.equal(bn2.running_mean, stats)
    assert not part.backbone.encoder["stages"][0].body[1].training


def test_everything_frozen_without_a_head_is_a_fixed_model_that_fit_refuses():
    emb = to_embedding_model(mlp(), freeze=True, input_size=(1, 8, 8))
    assert not trainable(emb) and emb(torch.rand(2, 1, 8, 8)).shape == (2, 16)  # fine for inference
    items = torch.rand(40, 1, 8, 8).numpy()
    labels = torch.arange(40).numpy() % 4
    with pytest.raises(ValueError, match="nothing would train"):
        finetuner.fit(mlp(), (items, labels), freeze=True, epochs=1, verbose=False)


# ---- bad input ------------------------------------------------------------------------------
def test_unknown_layer_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"no layer named 'encoder.stage.1'.*'encoder.stages.1'"):
        to_embedding_model(Net(), "encoder.stage.1", input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="layer_name"):
        to_embedding_model(Net(), 3, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match=r"freeze: .*no layer named 'encoder.stages.9'"):
        to_embedding_model(Net(), freeze=["encoder.stages.9"], input_size=(3, 8, 8))


@pytest.mark.parametrize("layer, why", [("pair", "not one tensor"), ("ids", "not floating point"),
                                        ("act", "called 2 times"), ("unused", "not called")])
def test_a_layer_whose_output_cannot_be_an_embedding_is_refused(layer, why):
    with pytest.raises(ValueError, match=f"cannot be an embedding: .*{why}"):
        to_embedding_model(Odd(), layer, input_size=(4,))


def test_input_size_that_does_not_fit_the_model_is_refused_with_the_models_error():
    with pytest.raises(ValueError, match=r"input_size: .*cannot run on a batch of shape \(2, 1, 8, 8\).*channels"):
        to_embedding_model(Net(), input_size=(1, 8, 8))
    with pytest.raises(ValueError, match="input_size: expected"):
        display(Net(), input_size=(3, -8, 8))
    with pytest.raises(ValueError, match="input_size: expected"):
        to_embedding_model(Net(), input_size="3x8x8")


def test_bad_freeze_output_dim_head_and_pooling_arguments():
    with pytest.raises(ValueError, match=r"freeze: 9 layers asked for.*\[-7, 7\]"):
        to_embedding_model(Net(), freeze=9, output_dim=3, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="freeze: expected"):
        to_embedding_model(Net(), freeze=0.5, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="freeze: expected"):
        to_embedding_model(Net(), freeze=[1, 2], input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="runs after the embedding layer"):
        to_embedding_model(Net(), "encoder.stages.0", freeze=["encoder.stages.2"], input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="output_dim"):
        to_embedding_model(Net(), output_dim=0, input_size=(3, 8, 8))
    with pytest.raises(TypeError, match="projection_head"):
        to_embedding_model(Net(), projection_head="transformer", output_dim=4, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match=r"projection_head: it must take the layer's pooled output \[B, 16\]"):
        to_embedding_model(Net(), projection_head=nn.Linear(32, 4), input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="output_dim: 5 asked for"):
        to_embedding_model(Net(), projection_head=nn.Linear(16, 4), output_dim=5, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="pooling"):
        to_embedding_model(Net(), pooling="sum", input_size=(3, 8, 8))
    with pytest.raises(TypeError, match="model"):
        to_embedding_model("resnet", input_size=(3, 8, 8))


def test_no_guessable_input_asks_for_input_size():
    with pytest.raises(ValueError, match=r"input_size: .*pass input_size"):
        to_embedding_model(nn.Sequential(TwoOutputs()))


# ---- saving ---------------------------------------------------------------------------------
def test_embedding_model_saves_and_loads_exactly(tmp_path):
    emb = to_embedding_model(Net(), "encoder.stages.1", freeze=-1, output_dim=6, input_size=(3, 8, 8)).eval()
    finetuner.save(emb, tmp_path / "m")
    with pytest.raises(ValueError, match="test_tailor.Net"):
        finetuner.load(tmp_path / "m")  # a pickled user class: unpickling runs code, so never by default
    back = finetuner.load(tmp_path / "m", trust_pickle=True)
    assert isinstance(back, EmbeddingModel) and back.layer_name == "encoder.stages.1"
    with torch.no_grad():
        assert torch.allclose(back(X_IMG), emb(X_IMG))
    assert back.train().backbone.encoder["stages"][0].body[1].training is False  # frozen layers stay in eval
    meta = json.loads((tmp_path / "m" / "finetuner.json").read_text())
    assert meta["class"] == "finetuner.models.tailor.EmbeddingModel"  # the public path, whatever module defines it


def test_models_pickled_before_the_tailor_became_a_package_still_load():
    import finetuner.models.tailor as tailor

    emb = to_embedding_model(mlp(), "4", input_size=(1, 8, 8))
    CutOff.__qualname__ = "_CutOff"  # pickle it under the old name (finetuner.models.tailor._CutOff)
    try:
        data = pickle.dumps(emb)
    finally:
        CutOff.__qualname__ = "CutOff"
    assert b"_CutOff" in data and tailor._CutOff is CutOff
    back = pickle.loads(data)
    assert isinstance(back.backbone[5], CutOff)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(back.eval()(x), emb.eval()(x))


# ---- one freeze rule, one table, for every framework -----------------------------------------
def test_freeze_rule_is_written_once_for_torch_keras_and_paddle():
    from finetuner.models.backends._common import resolve_freeze as framework_freeze
    from finetuner.models.tailor import freeze_spec

    units, names = ["a", "b.x", "c"], ["a", "b", "b.x", "b.y", "c"]
    match = lambda s: [n for n in names if n == s or n.startswith(s + ".")]  # noqa: E731
    for spec, has_head, expected in [(2, False, (["a", "b.x"], False)), (-1, True, (["a", "b.x", "c"], False)),
                                     (4, True, (["a", "b.x", "c"], True)), (True, True, (names, False)),
                                     (None, True, ([], False)), (["b"], False, (["b", "b.x", "b.y"], False))]:
        assert freeze_spec(spec, units, match, everything=names, has_head=has_head) == expected
        assert framework_freeze(spec, units, names, has_head) == expected
    with pytest.raises(ValueError, match=r"has 4 layers that hold weights \(the projection head counts as one\)"):
        framework_freeze(5, units, names, True)
    with pytest.raises(ValueError, match=r"has 3 layers that hold parameters; expected an int in \[-3, 3\]"):
        freeze_spec(-4, units, match, everything=names)
    with pytest.raises(ValueError, match="a list of layer names or prefixes, got \\[1\\]"):
        framework_freeze([1], units, names, False)  # the same message as for torch models


def test_display_table_is_silenced_by_verbosity(capsys):
    from finetuner.console import verbosity

    with verbosity(False):
        rows = display(mlp(), input_size=(1, 8, 8))
    assert len(rows) == 7 and capsys.readouterr().out == ""
