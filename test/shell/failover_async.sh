#!/usr/bin/env bash
# The failover of failover.sh with asynchronous replication: the figures of
# what it loses there (the reason tokenvault.synchronous_commit exists), and
# that each auth that needs authorizing again is one it lost.
TV_FAILOVER_REPLICATION=async exec bash "$(dirname "$0")/failover.sh"
