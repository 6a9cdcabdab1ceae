"""A kernel without nft dup or jhash: the refused batch is explained in the capability probe's
words (pure: the probe is replaced)."""

from __future__ import annotations

import pytest

from services import capabilities
from services.contracts.errors import KernelError
from services.contracts.policy import PortRange, Selector
from services.prem.backends import nftables
from services.prem.core.flowtable import FlowRule

SEL = Selector(next_header=17, dst_port=PortRange(first=1, last=1))


def fake_probe(missing: set[str]) -> object:
    def probe(names: tuple[str, ...] | None = None) -> capabilities.Capabilities:
        assert names is not None
        checks = tuple(
            capabilities.Check(
                capabilities._BY_NAME[name], name not in missing, "Error: No such file"
            )
            for name in names
        )
        return capabilities.Capabilities("test", checks, scratch=True, seconds=0.0)

    return probe


def test_missing_dup_is_named_with_its_kernel_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "probe", fake_probe({"nft dup"}))
    error = KernelError("nft", "Could not process rule: No such file or directory")
    desired = (FlowRule(1, "d", 6, SEL, 1, copies=(2,)),)
    explained = nftables._explained(error, desired)
    assert isinstance(explained, capabilities.MissingCapability)
    assert str(explained).startswith(
        "this kernel has no nft dup in ip6 tables (CONFIG_NFT_DUP_IPV6); the nftables back end "
        "cannot enforce balance, duplicate or priority policies here"
    )


def test_missing_jhash_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "probe", fake_probe({"nft jhash"}))
    error = KernelError("nft", "Could not process rule")
    explained = nftables._explained(error, (FlowRule(1, "b", 4, SEL, 1, buckets=(1, 2)),))
    assert "this kernel has no nft jhash (CONFIG_NFT_HASH)" in str(explained)


def test_missing_overflow_features_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "probe", fake_probe({"nft overflow"}))
    error = KernelError("nft", "Could not process rule: No such file or directory")
    rule = FlowRule(1, "p", 6, SEL, 1, tiers=((1, 1000), (2, 0)))
    explained = str(nftables._explained(error, (rule,)))
    assert "(CONFIG_NF_CONNTRACK_MARK, CONFIG_NFT_CT, CONFIG_NFT_LIMIT)" in explained
    assert "cannot enforce balance, duplicate or priority policies here" in explained


def test_other_failures_are_left_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities, "probe", fake_probe(set()))
    error = KernelError("nft", "something else")
    assert nftables._explained(error, (FlowRule(1, "b", 4, SEL, 1, buckets=(1, 2)),)) is error
    assert nftables._explained(error, (FlowRule(1, "f", 4, SEL, 1),)) is error
