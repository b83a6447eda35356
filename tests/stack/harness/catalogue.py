"""Every fault by name, and the order a run takes them in.
"""

from __future__ import annotations

from collections.abc import Callable

from .failover import (
    etcd_member_down,
    etcd_quorum_lost,
    primary_host_frozen,
    primary_host_killed,
    primary_killed,
    primary_network_cut,
    switchover_under_load,
    two_failovers,
)
from .faults import (
    Fault,
    app_host_stopped,
    app_instance_killed,
    both_standbys_stopped,
    one_standby_frozen,
    one_standby_stopped,
    primary_frozen,
    standby_down_past_purge,
    standby_network_cut,
    standby_receiver_stopped,
)

FAULTS: dict[str, Callable[[], Fault]] = {
    f.__name__: f for f in (one_standby_stopped, both_standbys_stopped, standby_network_cut,
                            app_instance_killed, app_host_stopped, primary_frozen,
                            one_standby_frozen, standby_receiver_stopped,
                            standby_down_past_purge, etcd_member_down, etcd_quorum_lost,
                            switchover_under_load, primary_killed, two_failovers,
                            primary_network_cut, primary_host_frozen, primary_host_killed)
}
# The faults that keep the primary first (the checker holds them to the stricter rules of a
# stable primary), then those that change it; none of them assumes which node is the primary.
ORDER = ["one_standby_stopped", "both_standbys_stopped", "standby_network_cut",
         "app_instance_killed", "app_host_stopped", "primary_frozen", "one_standby_frozen",
         "standby_receiver_stopped", "standby_down_past_purge", "etcd_member_down",
         "etcd_quorum_lost", "switchover_under_load", "primary_killed", "two_failovers",
         "primary_network_cut", "primary_host_frozen", "primary_host_killed"]


