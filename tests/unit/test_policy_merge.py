"""The policy's merge of a request over its settings (Policy.limits_for) and of a user's, their
groups' and the global maxima (Policy.allowance), from traitlets configuration, with no executor."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_worker.errors import SpecError
from jupyter_worker.executor import policy as policy_module
from jupyter_worker.executor.policy import ALLOWANCE_KEYS, Allowance, Policy
from jupyter_worker.limits import LIMITS, Limits

NOBODY_KNOWN = "jwtest-no-such-account"  # a name without an account has no groups


def configured(**settings) -> Policy:
    """A policy as an admin's config file would make it."""
    return Policy(config=Config({"Policy": settings}))


def merged(asked: Limits, **settings) -> Limits:
    """The limits a job of a user without entries or groups gets under these settings."""
    policy = configured(**settings)
    return policy.limits_for(asked, policy.allowance(NOBODY_KNOWN))


@pytest.fixture
def groups(monkeypatch):
    """Make users members of groups: the accounts database is not ours to change in a unit test,
    and what is under test is the merge, not the lookup."""
    membership: dict[str, list[str]] = {}
    monkeypatch.setattr(policy_module, "_groups_of", lambda user: membership.get(user, []))
    return membership


def test_defaults_fill_every_limit_not_asked_for():
    limits = merged(Limits(memory_mb="2G"))
    expected = {r.field: r.default for r in LIMITS}
    assert limits.to_dict() == expected | {"memory_mb": 2048}


def test_settings_accept_what_a_person_types():
    policy = configured(default_memory_limit="4G", max_memory_limit="8G", job_timeout="2h", max_io_limit="50M")
    assert (policy.default_memory_limit, policy.max_memory_limit) == (4096, 8192)
    assert policy.job_timeout == 7200.0
    assert policy.max_io_limit == 50 << 20
    assert Policy(max_tmp_limit="1G").max_tmp_limit == 1024


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_memory_limit", "lots"),
        ("default_memory_limit", "2M"),
        ("job_timeout", "soon"),
        ("max_cpu_limit", 0),
        ("default_tmp_limit", "1.5"),
    ],
)
def test_a_bad_setting_raises_a_trait_error_naming_it(setting, value):
    with pytest.raises(TraitError, match=f"^{setting}: "):
        Policy(**{setting: value})


def test_a_default_above_the_maximum_is_lowered_to_it():
    limits = merged(Limits(), default_memory_limit="2G", max_memory_limit="1G", job_timeout="2h", max_job_timeout="1h")
    assert (limits.memory_mb, limits.timeout_s) == (1024, 3600.0)


def test_a_limit_with_a_maximum_and_no_default_gets_the_maximum():
    limits = merged(Limits(), max_io_limit="50M", max_net_limit="10M")
    assert (limits.io_bps, limits.net_bps) == (50 << 20, 10 << 20)
    assert merged(Limits(), default_memory_limit=None).memory_mb is None


def test_an_asked_value_up_to_the_maximum_is_kept_and_one_above_it_is_refused():
    limits = merged(Limits(memory_mb="1G", io_bps="1M"), max_memory_limit="1G", max_io_limit="50M")
    assert (limits.memory_mb, limits.io_bps) == (1024, 1 << 20)
    with pytest.raises(SpecError, match=r"^memory limit: 2048 MiB is above the maximum of 1024 MiB$"):
        merged(Limits(memory_mb="2G"), max_memory_limit="1G")
    with pytest.raises(SpecError, match=r"^timeout: 2h is above the maximum of 1h$"):
        merged(Limits(timeout_s="2h"), max_job_timeout="1h")


def test_without_a_maximum_anything_within_the_limits_bounds_may_be_asked():
    assert merged(Limits(memory_mb="512G"), max_memory_limit=None).memory_mb == 512 << 10


def test_a_user_without_entries_gets_the_global_settings():
    policy = configured(max_jobs_per_user=3, max_memory_limit="4G")
    allowance = policy.allowance(NOBODY_KNOWN)
    assert (allowance.max_jobs, allowance.max_queued) == (3, 100)
    assert set(allowance.maxima) == set(ALLOWANCE_KEYS[2:])
    assert allowance.maxima["max_memory_limit"] == 4096
    assert allowance.maxima["max_job_timeout"] == 86400.0
    assert allowance.to_dict() == {"max_jobs": 3, "max_queued": 100, **allowance.maxima}


def test_the_users_own_entry_wins_over_their_groups_and_the_global_settings(groups):
    groups["alice"] = ["staff"]
    policy = configured(
        max_memory_limit="4G",
        group_limits={"staff": {"max_memory_limit": "32G", "max_jobs": 9}},
        user_limits={"alice": {"max_memory_limit": "16G"}},
    )
    allowance = policy.allowance("alice")
    assert allowance.maxima["max_memory_limit"] == 16384
    assert allowance.max_jobs == 9  # not in her entry: her group's
    assert policy.limits_for(Limits(memory_mb="16G"), allowance).memory_mb == 16384
    with pytest.raises(SpecError, match="above the maximum of 16384 MiB"):
        policy.limits_for(Limits(memory_mb="17G"), allowance)


def test_a_user_entry_of_none_means_no_maximum_even_if_a_group_has_one(groups):
    groups["alice"] = ["staff"]
    policy = configured(
        group_limits={"staff": {"max_memory_limit": "1G"}}, user_limits={"alice": {"max_memory_limit": None}}
    )
    assert policy.allowance("alice").maxima["max_memory_limit"] is None


def test_a_member_of_several_groups_gets_the_most_generous_value_of_each(groups):
    groups["bob"] = ["small", "large", "unlisted"]
    groups["carol"] = ["small", "unbounded"]
    policy = configured(
        max_jobs_per_user=1,
        max_memory_limit="1G",
        group_limits={
            "small": {"max_jobs": 2, "max_memory_limit": "2G", "max_job_timeout": "2h"},
            "large": {"max_jobs": 4, "max_memory_limit": "8G", "max_job_timeout": "1h"},
            "unbounded": {"max_jobs": 0, "max_memory_limit": None},
        },
    )
    bob = policy.allowance("bob")
    assert (bob.max_jobs, bob.maxima["max_memory_limit"], bob.maxima["max_job_timeout"]) == (4, 8192, 7200.0)
    carol = policy.allowance("carol")
    assert (carol.max_jobs, carol.maxima["max_memory_limit"]) == (0, None)  # 0 jobs and None: no cap


def test_groups_come_from_the_accounts_database():
    policy = configured(max_memory_limit="1G", group_limits={"root": {"max_memory_limit": "2G"}})
    assert policy.allowance("root").maxima["max_memory_limit"] == 2048
    assert policy.allowance(NOBODY_KNOWN).maxima["max_memory_limit"] == 1024


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"max_gpus": 1}, "unknown key 'max_gpus'"),
        ({"max_jobs": -1}, "a whole number >= 0"),
        ({"max_jobs": True}, "a whole number >= 0"),
        ({"max_memory_limit": "lots"}, "is not a size"),
        ("16G", "a dict of max_jobs"),
    ],
)
def test_a_bad_user_or_group_entry_raises_a_trait_error_naming_it(entry, words):
    for setting in ("user_limits", "group_limits"):
        with pytest.raises(TraitError, match=rf"^Policy\.{setting}\['x'\].*{words}"):
            configured(**{setting: {"x": entry}})


def test_entries_are_typed_as_the_settings_they_override():
    policy = configured(user_limits={"alice": {"max_memory_limit": "16G", "max_job_timeout": "2h", "max_jobs": 2}})
    assert policy.user_limits == {"alice": {"max_memory_limit": 16384, "max_job_timeout": 7200.0, "max_jobs": 2}}
    assert isinstance(policy.allowance("alice"), Allowance)
