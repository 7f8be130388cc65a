"""app.training.widen: the wider network computes what the trained one computes, on every
deep-supervision head, and its copies are not tied (the shares differ)."""
import dataclasses

import pytest
import torch

from app.inference.network import build_network
from app.inference.weights import NetworkSpec
from app.training.widen import widen_state_dict

DEMO_SPEC = NetworkSpec(input_channels=1, base_num_features=8, num_classes=5,
                        pool_op_kernel_sizes=((2, 2, 2),) * 3, conv_kernel_sizes=((3, 3, 3),) * 4)


def _trained_looking_network(spec, seed):
    torch.manual_seed(seed)
    network = build_network(spec)
    with torch.no_grad():   # instance-norm affine parameters away from their 1/0 start
        for name, tensor in network.state_dict().items():
            if "instnorm" in name:
                tensor.add_(torch.randn_like(tensor) * 0.3)
    return network.eval()


def _all_heads(network, x):
    network.do_ds = True
    with torch.no_grad():
        return network(x)


@pytest.mark.parametrize("factor", [2, 3])
def test_the_wider_network_gives_the_same_outputs(factor):
    narrow = _trained_looking_network(DEMO_SPEC, 0)
    wide = build_network(dataclasses.replace(DEMO_SPEC, base_num_features=8 * factor)).eval()
    wide.load_state_dict(widen_state_dict(narrow.state_dict(), factor, seed=1), strict=True)
    x = torch.randn(2, 1, 40, 40, 40)
    for before, after in zip(_all_heads(narrow, x), _all_heads(wide, x), strict=True):
        assert after.shape == before.shape
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
        assert before.abs().max() > 0.1     # heads that say something, so equality means something


def test_copies_of_a_channel_are_split_unequally_and_sum_to_the_original():
    narrow = _trained_looking_network(DEMO_SPEC, 2).state_dict()
    wide = widen_state_dict(narrow, 2, seed=3)
    name = "conv_blocks_context.1.blocks.1.conv.weight"          # (16, 16, 3, 3, 3) -> (32, 32, ...)
    old, new = narrow[name], wide[name]
    assert new.shape == (32, 32, 3, 3, 3)
    torch.testing.assert_close(new[:16, :16] + new[:16, 16:], old)   # the two input copies sum to the old weight
    torch.testing.assert_close(new[16:], new[:16])                    # output copies are repeated
    assert not torch.allclose(new[:16, :16], new[:16, 16:])          # unequal shares: untied gradients
    torch.testing.assert_close(wide["conv_blocks_context.0.blocks.0.conv.weight"][:8],
                               narrow["conv_blocks_context.0.blocks.0.conv.weight"])  # the image stays one channel


def test_a_tensor_foreign_to_generic_unet_is_refused():
    with pytest.raises(ValueError, match="not part of Generic_UNet"):
        widen_state_dict({"head.weight": torch.zeros(3, 4)})
