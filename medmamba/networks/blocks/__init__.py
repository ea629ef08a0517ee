"""Network blocks (MONAI-style networks/blocks): Mamba mixers, cross-scan mixers, patch ops, conv blocks."""
from medmamba.networks.blocks.conv import (
    BasicResBlock,
    ConvNormAct,
    conv_nd,
    conv_stage,
    transposed_conv_nd,
)
from medmamba.networks.blocks.gated_cnn import GatedCNNBlock
from medmamba.networks.blocks.mamba import MambaLayer, MambaMixer, ResidualVisionMambaLayer
from medmamba.networks.blocks.mhs import MultiHeadScan, ScanRouteAttention
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchEmbed, PatchExpanding, PatchMerging
from medmamba.networks.blocks.scan import default_routes
from medmamba.networks.blocks.ssm import RouteSSM
from medmamba.networks.blocks.ssnd import SSND, VSSBlock

__all__ = [
    "BasicResBlock",
    "ChannelsFirst",
    "ChannelsLast",
    "ConvNormAct",
    "GatedCNNBlock",
    "MambaLayer",
    "MambaMixer",
    "MultiHeadScan",
    "PatchEmbed",
    "PatchExpanding",
    "PatchMerging",
    "ResidualVisionMambaLayer",
    "RouteSSM",
    "SSND",
    "ScanRouteAttention",
    "VSSBlock",
    "conv_nd",
    "conv_stage",
    "default_routes",
    "transposed_conv_nd",
]
