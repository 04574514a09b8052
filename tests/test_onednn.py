"""opdpipe.onednn: F.linear through oneDNN, forward and backward, within float32 rounding of MKL's, and
F.linear itself wherever it does not apply. The numerical tests run oneDNN on any CPU (as if it had
AVX-512); which CPUs take it is tested on its own."""
import pytest
import torch
import torch.nn.functional as F

from opdpipe import onednn

# the fast path's shapes: (rows, inputs, outputs); 96 / 256 / 384 inputs are the teacher's and the
# down projections, longer than one block of oneDNN's dot product
SHAPES = [(1984, 64, 192), (1984, 64, 512), (704, 96, 768), (1984, 256, 64), (1984, 384, 96), (2048, 96, 99)]


@pytest.fixture(autouse=True)
def any_cpu(monkeypatch):
    monkeypatch.setattr(onednn, "_ON_THIS_CPU", True)


def _pair(M, K, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g), torch.randn(N, K, generator=g) / K ** 0.5


@pytest.mark.parametrize("M,K,N", SHAPES)
def test_values_and_gradients_match_f_linear(M, K, N):
    assert onednn.available()
    x, w = _pair(M, K, N)
    g = torch.randn(M, N, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (onednn.linear, F.linear):
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(xr, wr)
        y.backward(g)
        grads.append((y.detach(), xr.grad, wr.grad))
    for ours, ref in zip(*grads):  # output, d/dx (g @ w) and d/dw (g.T @ x: both operand orders occur)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_a_single_block_dot_product_gives_mkls_bits():
    x, w = _pair(1984, 64, 512)
    assert torch.equal(onednn.linear(x, w), F.linear(x, w))


def test_batched_and_strided_inputs_and_one_sided_gradients():
    x, w = _pair(64 * 31, 64, 192)
    x3 = x.view(64, 31, 64)
    strided = torch.randn(64, 31, 3, 64)[:, :, 1]  # every third row of a wider buffer
    w_only = w.clone().requires_grad_()
    for inp in (x3, strided):
        torch.testing.assert_close(onednn.linear(inp, w), F.linear(inp, w), rtol=1e-5, atol=1e-5)
    onednn.linear(x3, w_only).sum().backward()  # the input needs no gradient
    torch.testing.assert_close(w_only.grad, F.linear(x3, w).new_ones(64, 31, 192).flatten(0, 1).T @ x,
                               rtol=1e-5, atol=1e-4)
    x_only = x3.clone().requires_grad_()
    onednn.linear(x_only, w).sum().backward()  # the weight needs none
    torch.testing.assert_close(x_only.grad, torch.ones(64, 31, 192) @ w, rtol=1e-5, atol=1e-5)


def test_same_inputs_give_the_same_bits_every_time():
    x, w = _pair(1984, 384, 96)
    first = onednn.linear(x, w)
    assert all(torch.equal(first, onednn.linear(x, w)) for _ in range(3))


def test_only_non_intel_cpus_with_avx512_prefer_onednn():
    # MKL runs AVX-512 code on Intel CPUs alone: oneDNN is taken where the CPU has AVX-512 and MKL leaves it unused
    assert onednn.preferred("AVX512", "AuthenticAMD")
    assert not any(onednn.preferred(c, "AuthenticAMD") for c in ("AVX2", "DEFAULT", "ZVECTOR", "SVE256"))
    assert not onednn.preferred("AVX512", "GenuineIntel")
    assert not onednn.preferred("AVX512", "")  # vendor unknown: torch's own F.linear


@pytest.mark.parametrize("text,vendor", [
    ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n", "GenuineIntel"),
    ("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: avx512f\n", "AuthenticAMD"),
    ("processor\t: 0\nCPU implementer\t: 0x41\n", ""),  # an ARM CPU's cpuinfo names no vendor_id
])
def test_cpu_vendor_reads_cpuinfo(tmp_path, monkeypatch, text, vendor):
    monkeypatch.setattr(onednn.platform, "processor", lambda: "")
    (tmp_path / "cpuinfo").write_text(text)
    assert onednn.cpu_vendor(str(tmp_path / "cpuinfo")) == vendor


def test_cpu_vendor_without_cpuinfo_asks_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(onednn.platform, "processor", lambda: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD")
    assert onednn.cpu_vendor(str(tmp_path / "missing")) == "AuthenticAMD"
    monkeypatch.setattr(onednn.platform, "processor", lambda: "")
    assert onednn.cpu_vendor(str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("case", ["small", "float64", "disabled", "cpu where MKL is preferred"])
def test_what_it_does_not_take_goes_to_f_linear(case, monkeypatch):
    calls = []
    monkeypatch.setattr(onednn, "_mm", lambda a, w: calls.append(1) or F.linear(a, w))
    x, w = _pair(64, 64, 192) if case == "small" else _pair(1984, 64, 512)  # 0.8 M < MIN_MACS multiply-adds
    if case == "float64":
        x, w = x.double(), w.double()
    if case == "disabled":
        with onednn.disabled():
            out = onednn.linear(x, w)
    elif case == "cpu where MKL is preferred":
        with pytest.MonkeyPatch.context() as m:
            m.setattr(onednn, "_ON_THIS_CPU", False)
            assert onednn.built_in() and not onednn.available()
            out = onednn.linear(x, w)
    else:
        out = onednn.linear(x, w)
    assert calls == [] and torch.equal(out, F.linear(x, w))
    onednn.linear(*_pair(1984, 64, 512))  # and a large float32 one does reach oneDNN
    assert calls == [1]
