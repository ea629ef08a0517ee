"""U-Net of channels-last token blocks (VSS, MHS, gated CNN) with VM-UNet's layout, shared by ``vm_unet``,
``mhs_vm_unet`` and ``mambaout_unet`` so they differ only in the block.

The layout is VM-UNet's VSSM (JCruan519/VM-UNet, also MHS-VM's): a patch embedding, then per encoder stage ``i``
``depths[i]`` blocks followed by patch merging into stage ``i + 1``; the skip of a stage is its input (the
embedding or merging output, before its blocks). The decoder runs ``decoder_depths[0]`` blocks at the bottleneck,
then for each shallower stage adds the skip of the stage below, expands patches into the stage and runs
``decoder_depths[j]`` blocks; a final patch expansion restores the input resolution for a 1x1 conv head.

Under nnU-Net plans (first stride 1) stage 0 is instead a full-resolution residual conv stage (token mixing is
costliest there): its output is added after the last expansion and a conv stage replaces the last decoder blocks.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_nd, conv_stage
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchEmbed, PatchExpanding, PatchMerging
from medmamba.networks.blocks.stochastic_depth import drop_path_rates
from medmamba.networks.nets._unet import SegUNet, normalize_strides, per_stage, seg_heads

BlockFactory = Callable[[int, float], nn.Module]  # (dim, drop_path) -> channels-last block


def _tokens(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(ChannelsLast(), *modules, ChannelsFirst())


class TokenStage(nn.Module):
    """``entry`` (patch embedding or merging, channels-first in, channels-last out) then ``blocks``; returns
    (output, skip) channels-first, the skip being the entry's output as VM-UNet's ``skip_list``."""

    def __init__(self, entry: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.entry, self.blocks = entry, nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.entry(x)
        return self.blocks(x).movedim(-1, 1), x.movedim(-1, 1)


class TokenUNetDecoder(nn.Module):
    """VM-UNet's decoder over skips (channels-first, highest resolution first); outputs as ``UNetDecoder``.

    ``deep_supervision`` is the attribute nnU-Net's ``set_deep_supervision_enabled`` toggles.
    """

    def __init__(self, bottleneck: nn.Module, ups: Sequence[nn.Module], stages: Sequence[nn.Module],
                 heads: Sequence[nn.Module], final_up: nn.Module | None, add_first_skip: bool,
                 deep_supervision: bool = False):
        super().__init__()
        self.bottleneck = bottleneck
        self.ups, self.stages, self.heads = nn.ModuleList(ups), nn.ModuleList(stages), nn.ModuleList(heads)
        self.final_up, self.add_first_skip, self.deep_supervision = final_up, add_first_skip, deep_supervision

    def forward(self, skips: Sequence[torch.Tensor], deepest: torch.Tensor) -> list[torch.Tensor]:
        """``skips``: the stages' inputs (their entries' outputs); ``deepest``: the last stage's output."""
        x, outputs = self.bottleneck(deepest), []
        for i in reversed(range(len(self.stages))):
            x = self.ups[i](x + skips[i + 1])
            if i == 0 and self.add_first_skip:
                x = x + skips[0]
            x = self.stages[i](x)
            if i == 0:
                outputs.append(self.heads[0](x if self.final_up is None else self.final_up(x)))
            elif self.deep_supervision:
                if len(self.heads) == 1:
                    raise RuntimeError("deep supervision is on, but this net was built without its heads "
                                       "(build it with deep_supervision=True)")
                outputs.append(self.heads[i](x))
        return outputs[::-1]


def token_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    make_block: BlockFactory,
    features: Sequence[int],
    strides: Sequence,
    depths: int | Sequence[int],
    decoder_depths: int | Sequence[int],
    kernel_sizes: Sequence | None = None,
    drop_path_rate: float = 0.0,
    deep_supervision: bool = False,
) -> SegUNet:
    """Build the token U-Net (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels and classes.
        make_block: ``(dim, drop_path) -> channels-last block``.
        features: width per stage.
        strides: per stage; the first is the patch size (1 under nnU-Net plans: conv stage 0).
        depths: blocks per encoder stage (VM-UNet's ``depths``); conv blocks for a conv stage 0.
        decoder_depths: blocks per decoder stage, deepest first (VM-UNet's ``depths_decoder``): entry 0 runs at
            the bottleneck, entry j after expanding into stage ``n - 1 - j``.
        kernel_sizes: per stage (nnU-Net plans); the conv stage uses the first.
        drop_path_rate: stochastic depth rising linearly to this over the encoder blocks, falling over the
            decoder blocks.
        deep_supervision: return one output per decoder stage (nnU-Net's layout).
    """
    n = len(features)
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"features has {n} stages but strides has {len(strides)}")
    depths = per_stage(depths, n, "depths")
    decoder_depths = per_stage(decoder_depths, n, "decoder_depths")
    kernel = kernel_sizes[0] if kernel_sizes is not None else 3
    conv_first = all(s == 1 for s in strides[0])

    def blocks(dim: int, count: int, rates) -> list[nn.Module]:
        return [make_block(dim, next(rates)) for _ in range(count)]

    rates = iter(drop_path_rates(drop_path_rate, sum(depths[1:] if conv_first else depths)))
    encoder: list[nn.Module] = []
    for i, (f, s) in enumerate(zip(features, strides)):
        if i == 0 and conv_first:
            encoder.append(conv_stage(spatial_dims, in_channels, f, depths[0], kernel))
            continue
        entry = PatchEmbed(spatial_dims, in_channels, f, s) if i == 0 else \
            nn.Sequential(ChannelsLast(), PatchMerging(spatial_dims, features[i - 1], f, s))
        encoder.append(TokenStage(entry, blocks(f, depths[i], rates)))

    rates = iter(drop_path_rates(drop_path_rate, sum(decoder_depths[:-1] if conv_first else decoder_depths))[::-1])
    bottleneck = _tokens(*blocks(features[-1], decoder_depths[0], rates))
    stages: list[nn.Module] = [nn.Identity()] * (n - 1)
    for i in reversed(range(n - 1)):
        count = decoder_depths[n - 1 - i]
        stages[i] = conv_stage(spatial_dims, features[0], features[0], count, kernel) if i == 0 and conv_first \
            else _tokens(*blocks(features[i], count, rates))
    final_up = None
    if not conv_first:  # VM-UNet's Final_PatchExpand2D: to width features[0] // patch size, e.g. 96 -> 24
        final_width = max(1, features[0] // max(strides[0]))
        final_up = _tokens(PatchExpanding(spatial_dims, features[0], final_width, strides[0]))
    # heads for the deeper decoder stages only with deep supervision (nnU-Net's builder always asks for them)
    heads = seg_heads(spatial_dims, features, out_channels) if deep_supervision else \
        seg_heads(spatial_dims, features[:2], out_channels)
    if final_up is not None:
        heads[0] = conv_nd(spatial_dims, final_width, out_channels, 1)
    decoder = TokenUNetDecoder(
        bottleneck=bottleneck,
        ups=[_tokens(PatchExpanding(spatial_dims, features[i + 1], features[i], strides[i + 1])) for i in range(n - 1)],
        stages=stages,
        heads=heads,
        final_up=final_up,
        add_first_skip=conv_first,
        deep_supervision=deep_supervision,
    )
    return SegUNet(encoder, decoder, strides)


# ---- official checkpoints (VM-UNet's VSSM, also MHS-VM's): key mapping ----

_BLOCK_RULES = [  # inside one official VSSBlock -> ours (first match wins)
    (r"ln_1\.", "norm."),
    (r"self_attention\.conv2d\.", "mixer.conv."),
    (r"self_attention\.mhs\.x_ssproj(\.weight|_W)$", "mixer.head_proj.weight"),  # x_ssproj_W aliases the weight
    # each head's Mamba engine is registered twice: as mambaeng and inside its ScanPattern
    (r"self_attention\.mhs\.scanhead_(\w)\.(mambaeng|scanning\.seq2seq_engine)\.", r"mixer.head_ssms.\1."),
    (r"self_attention\.mhs\.cat_norm\.", "mixer.cat_norm."),
    (r"self_attention\.mhs\.y_proj\.", "mixer.out_proj."),
    (r"self_attention\.(x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)$", r"mixer.ssm.\1"),
    (r"self_attention\.(in_proj|out_norm|out_proj)\.", r"mixer.\1."),
]


def vssm_block_key(rest: str) -> str | None:
    """Our key for a key inside one official VSS block (VM-UNet, MHS-VM, VMamba), or None."""
    for pattern, repl in _BLOCK_RULES:
        if re.match(pattern, rest):
            return re.sub(pattern, repl, rest, count=1)
    return None


def vssm_checkpoint_filter(state_dict, model: nn.Module):
    """Map a VSSM state dict (VM-UNet / MHS-VM, with or without VMUNet's ``vmunet.`` prefix) to ``token_unet``'s.

    Official ``layers[i]`` (blocks, then the merging into stage i + 1) -> ``encoder[i]`` blocks and
    ``encoder[i + 1]``'s entry; ``layers_up[0]`` -> ``decoder.bottleneck``; ``layers_up[u]`` (expansion, blocks)
    -> ``decoder.ups[n - 1 - u]`` and ``decoder.stages[n - 1 - u]``; ``final_up`` / ``final_conv`` -> the final
    expansion and head 0. Returns a ``medmamba.weights.Converted``.
    """
    from medmamba.weights import remap

    n = len(model.encoder)

    def rename(key: str):
        key = key.removeprefix("vmunet.")
        if key.startswith("patch_embed."):
            return "encoder.0.entry." + key[len("patch_embed."):], None
        if key.startswith("final_up."):
            return "decoder.final_up.1." + key[len("final_up."):], None
        if key.startswith("final_conv."):
            return "decoder.heads.0." + key[len("final_conv."):], None
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if m:
            return f"encoder.{int(m[1]) + 1}.entry.1.{m[2]}", None
        m = re.match(r"layers_up\.(\d+)\.upsample\.(.*)", key)
        if m:
            return f"decoder.ups.{n - 1 - int(m[1])}.1.{m[2]}", None
        m = re.match(r"(layers|layers_up)\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m and (rest := vssm_block_key(m[4])) is not None:
            stage, block = int(m[2]), int(m[3])
            if m[1] == "layers":
                return f"encoder.{stage}.blocks.{block}.{rest}", None
            if stage == 0:
                return f"decoder.bottleneck.{block + 1}.{rest}", None
            return f"decoder.stages.{n - 1 - stage}.{block + 1}.{rest}", None
        return None

    return remap(state_dict, rename)
