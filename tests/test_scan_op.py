"""The selective scan as the torch operator ``medmamba::selective_scan``: torch.library's own consistency checks,
torch.compile of a segmentation network without graph breaks, and torch.export of two networks."""
import pytest
import torch
from test_selective_scan import make_inputs

import medmamba


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_operator_passes_opcheck(backend):
    """Schema, fake (meta) implementation against the real one, autograd registration, and AOT dispatch."""
    inputs = make_inputs(batch=1, dim=4, L=9, N=3, G=2)
    args = [t.requires_grad_() for t in inputs.values()] + [True, backend, True]
    result = torch.library.opcheck(torch.ops.medmamba.selective_scan.default, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_compiled_network_has_no_graph_break_and_matches_eager():
    """fullgraph=True fails on any graph break; aot_eager traces forward and backward through the operator
    (inductor would add a C++ build without proving more)."""
    torch.manual_seed(0)
    net = medmamba.create_model("umamba_bot", spatial_dims=2, preset="tiny", in_channels=1, num_classes=2)
    x = torch.randn(1, 1, 32, 32)
    grads = []
    for model in (torch.compile(net, backend="aot_eager", fullgraph=True), net):
        out = model(x)
        out.square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None})
        net.zero_grad()
    assert len(grads[1]) > 0
    torch.testing.assert_close(grads[0], grads[1])


def _scan_nodes(graph_module: torch.fx.GraphModule) -> int:
    """Calls of the scan operator in a graph and its nested graphs (autocast regions export as submodules)."""
    return sum(node.target == torch.ops.medmamba.selective_scan.default
               for module in graph_module.modules() if isinstance(module, torch.fx.GraphModule)
               for node in module.graph.nodes)


@pytest.mark.parametrize("name", ["mhs_vm_unet", "umamba_bot"])
def test_exported_network_matches_eager(name):
    torch.manual_seed(0)
    net = medmamba.create_model(name, spatial_dims=2, preset="tiny", in_channels=1, num_classes=2).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
    exported = torch.export.export(net, (x,))
    assert _scan_nodes(exported.graph_module) > 0
    torch.testing.assert_close(exported.module()(x), expected)
    fresh = torch.randn(1, 1, 48, 40)  # a size first seen while tracing: the trace leaves nothing behind
    exported = torch.export.export(net, (fresh,))
    with torch.no_grad():
        torch.testing.assert_close(net(fresh), exported.module()(fresh))
