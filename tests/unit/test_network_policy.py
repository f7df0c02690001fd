"""Which network modes a user may use (Policy.allowed_networks and the 'networks' key of a user's
or group's entry), the default mode falling back to an allowed one, and the names a policy may
give, from traitlets configuration, with no executor."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.executor import policy as policy_module
from jupyter_worker.executor.policy import Policy
from jupyter_worker.spec import JobRequest, NetworkMode

NONE, HOST, ISOLATED = NetworkMode.NONE, NetworkMode.HOST, NetworkMode.ISOLATED
BOB = "jwtest-no-such-bob"  # no account: the groups come from the fixture


def configured(**settings) -> Policy:
    return Policy(config=Config({"Policy": settings}))


@pytest.fixture
def groups(monkeypatch):
    membership: dict[str, list[str]] = {}
    monkeypatch.setattr(policy_module, "_groups_of", lambda user: membership.get(user, []))
    return membership


def test_host_is_off_for_users_without_an_entry_by_default():
    assert configured().allowance(BOB).networks == (NONE, ISOLATED)


def test_a_users_own_entry_wins_over_their_groups_and_the_global_setting(groups):
    groups[BOB] = ["staff"]
    policy = configured(
        allowed_networks=["none"],
        group_limits={"staff": {"networks": ["none", "host"]}},
        user_limits={BOB: {"networks": ["isolated"]}},
    )
    assert policy.allowance(BOB).networks == (ISOLATED,)


def test_a_member_of_several_groups_gets_every_mode_any_of_them_grants(groups):
    groups[BOB] = ["a", "b", "c"]
    policy = configured(group_limits={"a": {"networks": ["host"]}, "b": {"networks": ["none"]}, "c": {}})
    assert policy.allowance(BOB).networks == (NONE, HOST)


def test_groups_without_a_networks_key_leave_the_global_setting(groups):
    groups[BOB] = ["c"]
    policy = configured(allowed_networks=["none"], group_limits={"c": {"max_jobs": 1}})
    assert policy.allowance(BOB).networks == (NONE,)


def test_a_mode_the_user_may_not_use_is_forbidden_and_the_message_says_who_grants_it():
    policy = configured()
    with pytest.raises(WorkerError) as refused:
        policy.network_for(JobRequest(command=["true"], network=HOST), NONE, (NONE, ISOLATED), "bob")
    assert refused.value.reason is ErrorReason.FORBIDDEN
    assert "network 'host' is not allowed for bob" in refused.value.message
    assert "Policy.allowed_networks" in refused.value.message


def test_a_request_naming_no_mode_gets_the_default_and_an_allowed_mode_is_kept():
    policy = configured()
    assert policy.network_for(JobRequest(command=["true"]), NONE, (NONE,), "bob") is NONE
    assert policy.network_for(JobRequest(command=["true"], network=HOST), NONE, (NONE, HOST), "bob") is HOST


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"allowed_networks": []}, "Policy.allowed_networks: a list of network modes, at least one of"),
        ({"allowed_networks": ["wifi"]}, "'wifi' is not a network mode"),
        ({"user_limits": {BOB: {"networks": "host"}}}, "['networks']: a list of network modes"),
        ({"group_limits": {"staff": {"networks": ["lan"]}}}, "'lan' is not a network mode"),
    ],
)
def test_a_bad_network_setting_is_refused_with_its_name(settings, message):
    with pytest.raises(TraitError) as refused:
        configured(**settings)
    assert message in str(refused.value)


def test_names_without_an_account_or_group_are_reported_one_each():
    policy = configured(
        user_limits={BOB: {"max_jobs": 1}, "root": {}}, group_limits={"jwtest-no-group": {}, "root": {}}
    )
    assert policy.unknown_names() == [
        f"Policy.user_limits names {BOB!r}, no user here",
        "Policy.group_limits names 'jwtest-no-group', no group here",
    ]
