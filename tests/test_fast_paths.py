"""The training fast paths compute what the plain graph computes: the table-product first layer, the per-expert
order of ExpertGroup (BatchNorm statistics included), and the in-place ReLUs, on values and on gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _zoo_helpers import small_params
from mtl_models import DenseFeature, SparseFeature, zoo
from mtl_models.layers import MLP, ExpertGroup, FeatureEmbedding, embedding as embedding_module
from mtl_models.onnx_export import example_inputs

BOTH_CLS = ["classification", "classification"]


def features() -> list:
    # two 16-wide features share the product path's table; a 4-wide one stays on the plain GEMM; dense ones pass
    return [SparseFeature("user", 40, 16), SparseFeature("item", 25, 16), SparseFeature("city", 7, 4),
            DenseFeature("price"), DenseFeature("age", embed_dim=3)]


def batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"user": torch.randint(0, 40, (n,), generator=g), "item": torch.randint(0, 25, (n,), generator=g),
            "city": torch.randint(0, 7, (n,), generator=g), "price": torch.rand(n, generator=g),
            "age": torch.rand(n, generator=g)}


@pytest.fixture
def plain_graph(monkeypatch):
    """Switch the table-product path off (its size rule can never hold)."""
    def off() -> None:
        monkeypatch.setattr(embedding_module, "ROWS_PER_BATCH", 10 ** 9)
    return off


def test_lookup_linear_takes_the_product_path_and_matches_the_gemm() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding(features()).train()
    x = batch(512)
    lookup = emb.lookup(x)
    assert [lookup._use_products(t) for t in emb.tables] == [True, False]  # at most 40 ids <= 512 / 8; width 4 is too narrow
    assert not any(emb.lookup(batch(256))._use_products(t) for t in emb.tables)  # 40 ids > 256 / 8
    weight = torch.randn(24, emb.output_dim, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    fast = lookup.linear(weight, bias)
    fast_grads = torch.autograd.grad(fast.pow(2).sum(), [weight, bias, *emb.parameters()])
    slow = F.linear(emb(x), weight, bias)
    slow_grads = torch.autograd.grad(slow.pow(2).sum(), [weight, bias, *emb.parameters()])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_grouped_linear_matches_one_linear_per_group() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding(features()).train()
    x = batch(512, seed=1)
    weight = torch.randn(3, emb.output_dim, 10, requires_grad=True)  # [G, in, H]
    bias = torch.randn(3, 1, 10, requires_grad=True)
    grouped = emb.lookup(x).grouped_linear(weight, bias)  # [G, B, H]
    assert grouped.shape == (3, 512, 10) and grouped.is_contiguous()
    dense = emb(x)
    expected = torch.stack([dense @ weight[g] + bias[g] for g in range(3)])
    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(grouped.sin().sum(), [weight, emb.tables[0].table.weight])
    g2 = torch.autograd.grad(expected.sin().sum(), [weight, emb.tables[0].table.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_eval_mode_never_takes_the_product_path() -> None:
    emb = FeatureEmbedding(features()).eval()
    lookup = emb.lookup(batch(4096))
    assert not any(lookup._use_products(t) for t in emb.tables)


# the default parameter dicts (no "norm" key: BatchNorm in every bottom, expert and tower MLP, as Torch-RecHub's)
def _zoo_model(name: str, **overrides):
    """Zoo model ``name`` on two classification tasks: bottoms and experts [16, 8], towers [8], no dropout, BatchNorm
    in every MLP unless ``norm`` says otherwise; ``overrides``: flat hyperparameters."""
    params = small_params(name, widths=(16, 8), **{"norm": "batch", "dropout": 0.0, **overrides})
    return lambda f: zoo.build(name, f, BOTH_CLS, params)


# BatchNorm in every bottom, expert and tower MLP, as Torch-RecHub's; the sizes these tests' tolerances were set on
TUNED = {"shared_bottom": {"bottom_dims": [32, 16]}, "mmoe": {"n_expert": 4}, "ple": {"n_expert_shared": 1},
         "esmm": {"bottom_dims": [], "tower_dims": [16, 8]}}  # ESMM without a bottom: towers on the lookup
BUILDERS = {name: _zoo_model(name, **TUNED.get(name, {})) for name in zoo.names()}
# without normalisation the in-place ReLU follows the Linear directly: it must not write into a shared product
UNNORMALISED = {"mmoe_no_norm": _zoo_model("mmoe", n_expert=4, norm=None), "aitm_no_norm": _zoo_model("aitm", norm="none")}


def test_the_fast_path_models_have_batch_norm_by_default() -> None:
    for name, builder in BUILDERS.items():
        assert any(isinstance(m, nn.BatchNorm1d) for m in builder(features()).modules()), name
    for name, builder in UNNORMALISED.items():
        assert not any(isinstance(m, nn.BatchNorm1d) for m in builder(features()).modules()), name


@pytest.mark.parametrize("name", [*BUILDERS, *UNNORMALISED])
def test_training_step_is_the_same_with_and_without_the_product_path(name: str, plain_graph) -> None:
    """Train-mode outputs, every parameter's gradient and the BatchNorm running statistics agree."""
    x = batch(512, seed=2)
    builder = {**BUILDERS, **UNNORMALISED}[name]

    def one_step() -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = builder(features()).train()
        out = model(x)
        grads = torch.autograd.grad(out.sum(), list(model.parameters()), allow_unused=True)
        buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
        return out, grads, buffers

    fast = one_step()
    plain_graph()
    slow = one_step()
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=1e-4)
    # float32 sums in another order: differences are measured against the largest gradient (about 120 here;
    # the worst parameter differs by ~1e-6 of it, where a wrong feature slice or expert would differ by ~1)
    scale = max(float(b.abs().max()) for b in slow[1] if b is not None)
    for a, b in zip(fast[1], slow[1]):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-3)
    assert fast[2].keys() == slow[2].keys() and bool(fast[2]) == (name in BUILDERS)
    for k in fast[2]:
        torch.testing.assert_close(fast[2][k], slow[2][k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDERS)
def test_training_forward_compiles_as_one_graph_with_eager_gradients(name: str) -> None:
    """``MTLTrainer(compile=True)`` on the product path: Dynamo traces the whole train-mode forward (the table
    products' backward included) as one graph (``fullgraph`` raises at a break), compiles it once over three calls
    (nothing a call caches, compiled or eager, may trigger a recompile), and AOTAutograd's traced forward and backward, run on
    the same ATen kernels (``aot_eager``), give eager's outputs and gradients."""
    torch._dynamo.reset()
    x = batch(512, seed=4)
    graphs = []

    def counting_aot_eager(gm, inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, inputs)

    def step(compiled: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = BUILDERS[name](features()).train()
        assert model.embedding.lookup(x).uses_products()
        forward = torch.compile(model, backend=counting_aot_eager, fullgraph=True) if compiled else model
        out = forward(x)
        grads = torch.autograd.grad(out.sum(), list(model.parameters()), allow_unused=True)
        if compiled:  # an eager train-mode call in between fills the eager caches
            forward(x)
            model(x)
            forward(x)
        return out, grads

    compiled, eager = step(True), step(False)
    assert len(graphs) == 1
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-4)
    scale = max(float(b.abs().max()) for b in eager[1] if b is not None)
    for a, b in zip(compiled[1], eager[1]):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-3)


def _separate_mlps(group: ExpertGroup, input_dim: int, params: dict) -> list[MLP]:
    """E ordinary MLPs holding the same weights, norms and statistics as ``group``'s experts."""
    mlps = []
    for e in range(group.n_expert):
        mlp = MLP(input_dim, params)
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        norms = [m for m in mlp if isinstance(m, nn.BatchNorm1d)]
        for lin, bn, layer in zip(linears, norms, group.layers):
            lin.weight.data = layer.weight[e].T.clone()
            lin.bias.data = layer.bias[e, 0].clone()
            bn.load_state_dict(layer.norms[e].state_dict())
        mlps.append(mlp)
    return mlps


def test_batchnorm_experts_match_separate_mlps_in_training_and_eval() -> None:
    torch.manual_seed(0)
    params = {"dims": [12, 5]}  # BatchNorm by default
    group = ExpertGroup(3, 6, params)
    with torch.no_grad():  # non-trivial affine parameters
        for layer in group.layers:
            for bn in layer.norms:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    mlps = _separate_mlps(group, 6, params)
    x = torch.randn(32, 6)
    outs = group(x)  # training mode: batch statistics, running statistics move
    for e, mlp in enumerate(mlps):
        torch.testing.assert_close(outs[e], mlp(x))
    for layer, i in zip(group.layers, (1, 4)):
        for e, mlp in enumerate(mlps):
            torch.testing.assert_close(layer.norms[e].running_mean, mlp[i].running_mean)
            torch.testing.assert_close(layer.norms[e].running_var, mlp[i].running_var)
            assert not torch.equal(mlp[i].running_var, torch.ones_like(mlp[i].running_var))  # they moved
            assert int(layer.norms[e].num_batches_tracked) == 1
    group.eval()
    x2 = torch.randn(4, 6)
    for e, mlp in enumerate(mlps):
        torch.testing.assert_close(group(x2)[e], mlp.eval()(x2))


def test_relu_in_place_keeps_the_gradient_of_an_un_normalised_expert() -> None:
    """No norm between the first Linear and the ReLU: the activation must not write into the shared product."""
    torch.manual_seed(0)
    group = ExpertGroup(2, 5, {"dims": [4, 3], "norm": None})
    x = torch.randn(8, 5, requires_grad=True)
    out = torch.stack(group(x)).sum()
    (grad,) = torch.autograd.grad(out, [x])
    expected = torch.zeros_like(x)
    for e in range(2):
        h = torch.relu(x @ group.layers[0].weight[e] + group.layers[0].bias[e])
        h = torch.relu(h @ group.layers[1].weight[e] + group.layers[1].bias[e])
        expected += torch.autograd.grad(h.sum(), [x])[0]
    torch.testing.assert_close(grad, expected)


def test_models_export_the_plain_graph_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = BUILDERS["mmoe"](features()).eval()
    x = example_inputs(model, batch_size=4096)
    assert not any(model.embedding.lookup(x)._use_products(t) for t in model.embedding.tables)


@pytest.mark.parametrize("norm", [None, "batch", "layer"])
def test_mlp_group_on_the_lookup_matches_separate_mlps(norm) -> None:
    """AITM's bottoms (``MLPGroup``) and ESMM's towers run their first layers as one grouped product: outputs and
    gradients equal separate MLPs (and, with no norm, the in-place ReLU after the first Linear must not write into
    the product)."""
    from mtl_models.layers import MLPGroup

    torch.manual_seed(0)
    emb = FeatureEmbedding(features()).train()
    mlps = [MLP(emb.output_dim, {"dims": [12, 6], "norm": norm}) for _ in range(3)]
    x = batch(512, seed=3)
    lookup = emb.lookup(x)
    assert lookup.uses_products()
    together = MLPGroup(mlps)(lookup)
    params = [*emb.parameters(), *(p for m in mlps for p in m.parameters())]
    loss = sum((h * (i + 1)).sin().sum() for i, h in enumerate(together))
    grads = torch.autograd.grad(loss, params)
    dense = emb(x)
    separate = [m(dense) for m in mlps]
    expected = torch.autograd.grad(sum((h * (i + 1)).sin().sum() for i, h in enumerate(separate)), params)
    for a, b in zip(together, separate):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    scale = max(float(b.abs().max()) for b in expected)  # BatchNorm's gradients reach ~1e3 here; float32 order
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-3)


def test_mix_experts_gradients_match_autograd_of_the_formula() -> None:
    from mtl_models.layers.gates import mix_experts

    torch.manual_seed(0)
    gates = torch.rand(6, 3, dtype=torch.float64).softmax(1).requires_grad_()
    experts = [torch.randn(6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda g, *e: mix_experts(g, e), (gates, *experts))
    expected = sum(gates[:, k:k + 1] * experts[k] for k in range(3))
    torch.testing.assert_close(mix_experts(gates, experts), expected)


def test_task_gates_on_one_shared_input_match_one_product_per_gate() -> None:
    """PLE's first level gives every task gate the embedding (one Linear over all gates); upper levels give each
    its own input (one product each). Both must compute ``softmax(x_t @ W_t + b_t)`` and its mixture."""
    from mtl_models.layers import TaskGates

    torch.manual_seed(0)
    emb = FeatureEmbedding(features()).train()
    gates = TaskGates(emb.output_dim, [[0, 2], [1, 2]])
    x = batch(512, seed=6)
    experts = [torch.randn(512, 4, requires_grad=True) for _ in range(3)]
    lookup = emb.lookup(x)
    assert lookup.uses_products()
    mixed, weights = gates([lookup, lookup], experts)  # the shared-input path, on the table products
    dense = emb(x)
    separate, weights2 = gates([dense, dense.clone()], experts)  # distinct inputs: a product per gate
    expected = torch.stack([(dense @ gates.weight[t] + gates.bias[t]).softmax(-1) for t in range(2)], dim=1)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights2, expected, atol=1e-6, rtol=1e-5)
    for t, ids in enumerate(gates.expert_ids):
        want = sum(expected[:, t, k:k + 1] * experts[i] for k, i in enumerate(ids))
        torch.testing.assert_close(mixed[t], want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(separate[t], want, atol=1e-6, rtol=1e-5)
    params = [gates.weight, gates.bias, *experts, *emb.parameters()]
    g1 = torch.autograd.grad(sum(m.sin().sum() for m in mixed), params)
    g2 = torch.autograd.grad(sum(m.sin().sum() for m in separate), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("groups,with_bias", [(1, True), (3, True), (3, False)])
def test_table_product_matches_the_gemm_on_values_and_gradients(groups: int, with_bias: bool) -> None:
    """The fused gather-sum (products, bias in feature 0's rows, H-major backward) against the GEMM it replaces."""
    from mtl_models.layers.table_product import PaddedRows, TableProduct

    torch.manual_seed(0)
    n, vocab, d, width, rows = 3, 5, 2, 4, 7
    ids = torch.randint(0, vocab, (rows, n)) + torch.arange(n) * vocab  # [B, n] rows of the padded table
    padded = torch.randn(n, vocab, d, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(groups, n * d, width, dtype=torch.float64, requires_grad=True)
    bias = [torch.randn(groups, 1, width, dtype=torch.float64, requires_grad=True)] if with_bias else []

    def fused(p, w, *b):
        samples, offsets = PaddedRows(ids, n * vocab).samples_by_row()
        return TableProduct.apply(ids, samples, offsets, p, w, b[0] if b else None)

    assert torch.autograd.gradcheck(fused, (padded, weight, *bias))
    looked_up = padded.reshape(n * vocab, d)[ids].flatten(1)  # [B, n*d], the concatenated embedding
    expected = torch.einsum("bi,gih->gbh", looked_up, weight) + (bias[0] if bias else 0)  # [G, B, H]
    torch.testing.assert_close(fused(padded, weight, *bias), expected)


@pytest.mark.parametrize("n_rows", [60, 40_000])  # the 16-bit radix sort, and the general sort above 2**15 rows
def test_padded_rows_group_every_sample_under_the_rows_it_reads(n_rows: int) -> None:
    from mtl_models.layers.table_product import PaddedRows

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, n_rows, (50, 3), generator=g)  # [B, n]
    samples, offsets = PaddedRows(ids, n_rows).samples_by_row()
    ends = torch.cat([offsets[1:], torch.tensor([samples.numel()])])
    for row in ids.unique().tolist() + [n_rows - 1]:
        expected = sorted(b for b in range(50) for f in range(3) if ids[b, f] == row)
        assert samples[offsets[row]:ends[row]].tolist() == expected  # ascending: a deterministic summation order



@pytest.mark.parametrize("name", ["shared_bottom", "mmoe"])
def test_bf16_autocast_training_step_runs_the_product_path_backward(name: str, plain_graph) -> None:
    """Under bf16 autocast (MTLTrainer's mixed precision, on by default on CUDA) the products and their gradient
    are bf16 while the table and weights stay float32: the backward must still run, give float32 gradients, and
    be about as close to the float32 step as the plain graph's bf16 step is (either is 16-19% off in L2 here,
    bf16 keeping 8 significant bits; a wrong row or slice would be ~100%)."""
    x = batch(512, seed=5)

    def one_step(bf16: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = BUILDERS[name](features()).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
        grads = torch.autograd.grad(out.float().sum(), list(model.parameters()))
        assert all(g.dtype == torch.float32 for g in grads)
        return torch.cat([g.reshape(-1) for g in grads])  # every parameter's gradient, flat

    reference, fast = one_step(False), one_step(True)
    plain_graph()
    plain = one_step(True)

    def error(g: torch.Tensor) -> float:
        return float((g - reference).norm() / reference.norm())

    assert 0 < error(fast) < 1.5 * error(plain), (error(fast), error(plain))


@pytest.mark.parametrize("module", ["shared_bottom", "mmoe", "ple", "aitm"])
def test_models_are_built_from_public_blocks_only(module: str) -> None:
    """A model file imports from ``mtl_models.layers`` only the public blocks (its ``__all__``), never a layers
    submodule: the fast paths (the lookup's table products, grouped products, mixing) stay inside the blocks."""
    import ast
    import importlib
    import inspect

    import mtl_models.layers as layers

    tree = ast.parse(inspect.getsource(importlib.import_module(f"mtl_models.models.{module}")))
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if node.module and "layers" in node.module]
    assert imported, module
    for source, name in imported:
        assert source == "layers" and name in layers.__all__, (module, source, name)
