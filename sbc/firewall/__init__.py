"""The kernel layer: a ruleset rendered from the configuration (`render`), and
the kernel set of banned addresses kept in step with the sbc's ban table
(`NftBanSet`)."""

from .nftset import NftBanSet
from .render import FORMATS, FirewallSpec, Limit, render, render_spec, spec_from_config

__all__ = ["FORMATS", "FirewallSpec", "Limit", "NftBanSet", "render", "render_spec",
           "spec_from_config"]
