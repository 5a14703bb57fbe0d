"""Behaviour of the models: every zoo entry (parametrized over ``zoo.names()``: shapes, ranges, gradients, the
weights GradNorm watches, batches of one, determinism) and the built-in ones' own (gates, sizes, errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _zoo_helpers import build as zoo_build
from mtl_models import AITM, ESMM, MMOE, PLE, DenseFeature, SharedBottom, SparseFeature, zoo
from mtl_models.onnx_export import example_inputs

MIXED = ["classification", "regression"]
BOTH_CLS = ["classification", "classification"]


def make_features() -> list:
    return [SparseFeature("user", 50, 8), SparseFeature("item", 30, 8), SparseFeature("city", 7, 4),
            DenseFeature("price"), DenseFeature("age", embed_dim=3)]


def towers(n: int = 2) -> list[dict]:
    return [{"dims": [8], "dropout": 0.1, "activation": "relu"} for _ in range(n)]


def build(name: str, task_types=MIXED, widths=(16, 8), **overrides) -> nn.Module:
    """Model ``name`` from the zoo at small sizes (bottoms and experts ``widths``, towers [8], BatchNorm in every
    MLP, as Torch-RecHub's); flat ``overrides`` (``norm=None``, ``n_expert=4``) on top. A model that takes only
    classification tasks (ESMM, AITM) gets two of them."""
    return zoo_build(name, make_features(), task_types, widths=widths, **{"norm": "batch", "dropout": 0.1, **overrides})


@pytest.mark.parametrize("name", zoo.names())
def test_output_shape_and_range(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    out = model(example_inputs(model, batch_size=64))
    assert out.shape == (64, 2)
    for t, task_type in enumerate(model.task_types):
        if task_type == "classification":
            assert torch.all((out[:, t] > 0) & (out[:, t] < 1)), f"task {t} is not a probability"
    if model.task_types[1] == "regression":
        # a raw value: not squashed into (0, 1) for every row of a random model with a random bias
        model.towers[1].last_linear.bias.data.fill_(-3.0)
        assert model(example_inputs(model, batch_size=64))[:, 1].max() < 0


def test_dense_inputs_accept_column_vectors() -> None:
    torch.manual_seed(0)
    model = build("mmoe").eval()
    x = example_inputs(model, batch_size=5)
    x2 = {k: (v.unsqueeze(1) if v.is_floating_point() else v) for k, v in x.items()}
    torch.testing.assert_close(model(x), model(x2))


def test_esmm_ctcvr_never_exceeds_ctr_and_cvr_is_available() -> None:
    torch.manual_seed(1)
    model = build("esmm").eval()
    x = example_inputs(model, batch_size=256)
    out = model(x)
    assert torch.all(out[:, 1] <= out[:, 0])
    p_cvr = model.predict_cvr(x)
    torch.testing.assert_close(out[:, 1], out[:, 0] * p_cvr)
    assert torch.equal(model.training_targets(torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])),
                       torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]))


def test_mmoe_gates_are_distributions_over_experts() -> None:
    model = build("mmoe", n_expert=4).eval()
    gates = model.gate_weights(example_inputs(model, batch_size=32))
    assert gates.shape == (32, 2, 4)
    assert torch.all(gates >= 0)
    torch.testing.assert_close(gates.sum(-1), torch.ones(32, 2))


@pytest.mark.parametrize("n_level", [1, 2, 3])
def test_ple_levels_and_gates(n_level: int) -> None:
    torch.manual_seed(0)
    model = PLE(features=make_features(), task_types=MIXED, n_level=n_level, n_expert_specific=2, n_expert_shared=3,
                expert_params={"dims": [16]}, tower_params_list=towers())
    x = example_inputs(model, batch_size=16)
    assert model(x).shape == (16, 2)
    levels = model.gate_weights(x)
    assert len(levels) == n_level
    for i, (task_gates, shared_gates) in enumerate(levels):
        assert task_gates.shape == (16, 2, 2 + 3)  # own 2 experts + 3 shared
        torch.testing.assert_close(task_gates.sum(-1), torch.ones(16, 2))
        if i < n_level - 1:
            assert shared_gates.shape == (16, 2 * 2 + 3)  # the shared gate mixes every expert
            torch.testing.assert_close(shared_gates.sum(-1), torch.ones(16))
        else:
            assert shared_gates is None


def test_ple_task_gate_ignores_other_tasks_experts() -> None:
    """Task 0's output must not depend on task 1's specific experts (single level: no shared gate path)."""
    torch.manual_seed(0)
    model = PLE(features=make_features(), task_types=MIXED, n_level=1, n_expert_specific=1, n_expert_shared=1,
                expert_params={"dims": [8]}, tower_params_list=towers()).eval()
    x = example_inputs(model, batch_size=8)
    before = model(x)
    with torch.no_grad():
        model.levels[0].experts.layers[0].weight[1].add_(1.0)  # expert 1 = task 1's specific expert
    after = model(x)
    torch.testing.assert_close(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, 1], after[:, 1])


@pytest.mark.parametrize("name", zoo.names())
def test_every_parameter_gets_a_finite_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).train()
    x = example_inputs(model, batch_size=32)
    out = model(x)
    loss = out.sum()
    aux = model.auxiliary_loss(out)
    if aux is not None:
        loss = loss + aux
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        if "embedding" not in pname:  # embedding rows not looked up rightly get zero
            assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient (dead branch)"


@pytest.mark.parametrize("name", zoo.names())
def test_every_task_reaches_the_last_shared_parameters(name: str) -> None:
    """GradNorm (``weighting: gradnorm``) balances the tasks by their gradient norms on these weights: each must be
    one of the model's parameters and get a non-zero gradient from every task's output."""
    torch.manual_seed(0)
    model = build(name).train()
    shared = model.last_shared_parameters()
    owned = {id(p) for p in model.parameters()}
    assert shared and all(isinstance(p, nn.Parameter) and id(p) in owned for p in shared)
    out = model(example_inputs(model, batch_size=32))
    for t in range(model.n_task):
        grads = torch.autograd.grad(out[:, t].sum(), shared, retain_graph=True, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads), f"task {t} does not reach them"


@pytest.mark.parametrize("name", zoo.names())
def test_batch_of_one_in_eval_mode_uses_the_running_statistics(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).train()
    model(example_inputs(model, batch_size=64, seed=1))  # moves the running statistics away from (0, 1)
    model.eval()
    x = example_inputs(model, batch_size=5, seed=2)
    one = model({k: v[:1] for k, v in x.items()})
    assert one.shape == (1, 2)
    torch.testing.assert_close(one, model(x)[:1])  # a row's score does not depend on the rows beside it


@pytest.mark.parametrize("name", zoo.names())
def test_batch_of_one_in_train_mode_is_a_one_line_error_naming_the_mlp(name: str) -> None:
    model = build(name).train()
    with pytest.raises(ValueError, match=r"^\w+_params(_list\[\d\])?: a training batch of 1 row cannot be batch-normalised"
                                         r".*set \w+_params(_list\[\d\])?\['norm'\] to None$") as err:
        model(example_inputs(model, batch_size=1))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", zoo.names())
def test_batch_of_one_trains_without_batch_norm(name: str) -> None:
    model = build(name, norm=None).train()
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    out = model(example_inputs(model, batch_size=1))
    assert out.shape == (1, 2)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _batch_norm_widths(model: nn.Module) -> list[int]:
    return sorted(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_batch_norm_is_the_default_in_bottoms_experts_and_towers_not_in_gates() -> None:
    """Torch-RecHub's MLP has BatchNorm after every hidden Linear; with the same dicts ours has it at the same places."""
    mmoe = MMOE(features=make_features(), task_types=MIXED, n_expert=3, expert_params={"dims": [8, 6]},
                tower_params_list=[{"dims": [4]}] * 2)
    assert _batch_norm_widths(mmoe) == [4, 4] + [6] * 3 + [8] * 3  # two towers; each expert its own, per layer
    assert _batch_norm_widths(build("shared_bottom", widths=(32, 16))) == [8, 8, 16, 32]
    assert _batch_norm_widths(build("aitm")) == [8, 8, 8, 8, 16, 16]  # two bottoms [16, 8], two towers [8]
    ple = PLE(features=make_features(), task_types=MIXED, n_level=2, n_expert_specific=2, n_expert_shared=2,
              expert_params={"dims": [16], "norm": "layer"}, tower_params_list=towers())
    # its expert_params say "layer": no BatchNorm in the experts; towers keep the default
    assert _batch_norm_widths(ple) == [8, 8]
    gates = [ple.levels[0].task_gates, ple.levels[0].shared_gate, mmoe.gates]
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for g in gates for m in g.modules())  # plain linear gates
    for off in (None, "none"):
        model = MMOE(features=make_features(), task_types=MIXED, n_expert=2, expert_params={"dims": [8], "norm": off},
                     tower_params_list=[{"dims": [4], "norm": off}] * 2)
        assert _batch_norm_widths(model) == []


@pytest.mark.parametrize("name", zoo.names())
def test_same_seed_same_output(name: str) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build(name).eval()
        outs.append(model(example_inputs(model, batch_size=8, seed=5)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_one_fused_table_and_no_sharing_between_models() -> None:
    features = [SparseFeature("a", 10, 4), SparseFeature("b", 20, 4), DenseFeature("d")]
    m1 = SharedBottom(features=features, task_types=BOTH_CLS, bottom_params={"dims": [8]}, tower_params_list=towers())
    m2 = SharedBottom(features=features, task_types=BOTH_CLS, bottom_params={"dims": [8]}, tower_params_list=towers())
    tables = [m for m in m1.modules() if isinstance(m, nn.Embedding)]
    assert len(tables) == 1 and tables[0].num_embeddings == 30
    ids1 = {id(p) for p in m1.parameters()}
    assert ids1.isdisjoint(id(p) for p in m2.parameters())
    # feature i's ids are offset into the shared table: id 3 of "b" is row 10 + 3
    x = {"a": torch.tensor([0]), "b": torch.tensor([3]), "d": torch.tensor([0.5])}
    emb = m1.embedding(x)
    torch.testing.assert_close(emb[0, 4:8], tables[0].weight[13])
    torch.testing.assert_close(emb[0, 8], torch.tensor(0.5))


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_parameter_counts_match_the_formulas() -> None:
    features = [SparseFeature("a", 10, 4), SparseFeature("b", 6, 4), DenseFeature("d")]
    emb, d_in = 16 * 4, 4 + 4 + 1
    tower = [{"dims": [5]}] * 2
    count = lambda m: sum(p.numel() for p in m.parameters())
    hidden = lambda n_in, n_out: linear(n_in, n_out) + 2 * n_out  # Linear + the default BatchNorm's weight and bias

    sb = SharedBottom(features=features, task_types=BOTH_CLS, bottom_params={"dims": [8, 6]}, tower_params_list=tower)
    assert count(sb) == emb + hidden(d_in, 8) + hidden(8, 6) + 2 * (hidden(6, 5) + linear(5, 1))

    e, t = 3, 2
    mmoe = MMOE(features=features, task_types=BOTH_CLS, n_expert=e, expert_params={"dims": [8, 6]}, tower_params_list=tower)
    experts = e * (hidden(d_in, 8) + hidden(8, 6))
    gates = linear(d_in, t * e)
    assert count(mmoe) == emb + experts + gates + t * (hidden(6, 5) + linear(5, 1))

    s, h = 2, 1
    ple = PLE(features=features, task_types=BOTH_CLS, n_level=2, n_expert_specific=s, n_expert_shared=h,
              expert_params={"dims": [8]}, tower_params_list=tower)
    n_total = t * s + h
    level1 = n_total * hidden(d_in, 8) + t * linear(d_in, s + h) + linear(d_in, n_total)  # with shared gate
    level2 = n_total * hidden(8, 8) + t * linear(8, s + h)  # last level: no shared gate
    assert count(ple) == emb + level1 + level2 + t * (hidden(8, 5) + linear(5, 1))

    aitm = AITM(features=features, task_types=BOTH_CLS, bottom_params={"dims": [8]}, tower_params_list=tower,
                attention_params={"attention_dim": 3})
    attention = 2 * linear(8, 3) + linear(8, 8)
    assert count(aitm) == emb + t * hidden(d_in, 8) + linear(8, 8) + attention + t * (hidden(8, 5) + linear(5, 1))


def test_aitm_calibration_loss() -> None:
    model = build("aitm")
    assert model.default_auxiliary_weight == pytest.approx(0.6)
    ordered = torch.tensor([[0.9, 0.5], [0.3, 0.3], [0.2, 0.01]])
    assert model.auxiliary_loss(ordered).item() == 0.0
    violating = torch.tensor([[0.2, 0.5], [0.3, 0.3]])
    assert model.auxiliary_loss(violating).item() == pytest.approx(0.3 / 2)  # mean over the batch of max(p2 - p1, 0)
    three = torch.tensor([[0.5, 0.6, 0.1]])
    assert AITM(features=make_features(), task_types=["classification"] * 3, bottom_params={"dims": [8]},
                tower_params_list=towers(3)).auxiliary_loss(three).item() == pytest.approx(0.1)


def test_missing_feature_is_a_clear_error() -> None:
    model = build("mmoe")
    x = example_inputs(model, batch_size=2)
    del x["item"]
    with pytest.raises(ValueError, match="missing feature 'item'"):
        model(x)


@pytest.mark.parametrize("make, match", [
    (lambda: SharedBottom(features=make_features(), task_types=["classification", "ranking"], bottom_params={"dims": [8]}, tower_params_list=towers()), "task_types"),
    (lambda: SharedBottom(features=make_features(), task_types=MIXED, bottom_params={"dims": [8]}, tower_params_list=towers(3)), "tower_params_list"),
    (lambda: SharedBottom(features=make_features(), task_types=MIXED, bottom_params={"dims": []}, tower_params_list=towers()), "bottom_params"),
    (lambda: MMOE(features=make_features(), task_types=MIXED, n_expert=2, expert_params={"dims": [8], "activation": "swish2"}, tower_params_list=towers()), "activation"),
    (lambda: MMOE(features=make_features(), task_types=MIXED, n_expert=0, expert_params={"dims": [8]}, tower_params_list=towers()), "n_expert"),
    (lambda: SparseFeature("a", 0), "vocab_size"),
    (lambda: SparseFeature("a", 10, embed_dim=-1), "embed_dim"),
    (lambda: DenseFeature("a", embed_dim=0), "embed_dim"),
    (lambda: SharedBottom(features=[SparseFeature("a", 3), DenseFeature("a")], task_types=MIXED, bottom_params={"dims": [8]}, tower_params_list=towers()), "duplicate feature names"),
    (lambda: ESMM(features=make_features(), task_types=MIXED, bottom_params=None, tower_params_list=towers()), "ESMM needs exactly two classification"),
    (lambda: ESMM(features=make_features(), task_types=["classification"] * 3, bottom_params=None, tower_params_list=towers(3)), "ESMM needs exactly two classification"),
    (lambda: AITM(features=make_features(), task_types=MIXED, bottom_params={"dims": [8]}, tower_params_list=towers()), "AITM"),
    (lambda: AITM(features=make_features(), task_types=BOTH_CLS, bottom_params={"dims": [8]}, tower_params_list=towers(), attention_params={"attention_dim": 0}), "attention_dim"),
    (lambda: PLE(features=make_features(), task_types=MIXED, n_level=0, n_expert_specific=1, n_expert_shared=1, expert_params={"dims": [8]}, tower_params_list=towers()), "n_level"),
    (lambda: SharedBottom(features=make_features(), task_types=MIXED, bottom_params={"dims": [8], "dropot": 0.1}, tower_params_list=towers()), "unknown keys"),
])
def test_bad_configuration_names_the_argument(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("activation", ["relu", "prelu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "none"])
def test_every_activation_builds_and_runs(activation: str) -> None:
    model = MMOE(features=make_features(), task_types=MIXED, n_expert=2, expert_params={"dims": [8], "activation": activation},
                 tower_params_list=[{"dims": [4], "activation": activation}] * 2)
    assert torch.isfinite(model(example_inputs(model, batch_size=3))).all()


def test_batched_experts_equal_separate_mlps() -> None:
    """The fused ExpertGroup computes exactly what E independent MLPs with the same weights compute."""
    from mtl_models.layers import MLP, ExpertGroup
    torch.manual_seed(0)
    group = ExpertGroup(3, 5, {"dims": [7, 4], "activation": "gelu"})
    x = torch.randn(6, 5)
    out = group(x)  # 3 x [6, 4]: one tensor per expert
    for e in range(3):
        mlp = MLP(5, {"dims": [7, 4], "activation": "gelu"})
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        for lin, layer in zip(linears, group.layers):
            lin.weight.data = layer.weight[e].T.clone()
            lin.bias.data = layer.bias[e, 0].clone()
        torch.testing.assert_close(out[e], mlp(x))
