#!/usr/bin/env bash
# The isolated test network.
#   net.sh up              namespace kse2e-net with bridge br0 ($ROUTER_IP/24),
#                          the router between the test hosts; no link to the machine
#   net.sh attach NS IP    namespace NS joined to the bridge by a veth (eth0 inside),
#                          default route via the router (inside the test network only)
# Nothing is ever created in the machine's own network namespace.
source "$(dirname "$0")/lib.sh"
case ${1:-} in
up)
  ip netns list | grep -qw "$NET_NS" && exit 0
  ip netns add "$NET_NS"
  ip -n "$NET_NS" link set lo up
  ip -n "$NET_NS" link add br0 type bridge
  ip -n "$NET_NS" addr add "$ROUTER_IP/24" dev br0
  ip -n "$NET_NS" link set br0 up
  in_ns "$NET_NS" sysctl -qw net.ipv4.ip_forward=1
  log "network $NET_NS up (router $ROUTER_IP)"
  ;;
attach)
  ns=$2 ip=$3 veth=v${2#"$PFX"-}
  ip netns list | grep -qw "$ns" || ip netns add "$ns"
  ip -n "$NET_NS" link add "$veth" type veth peer name eth0 netns "$ns"
  ip -n "$NET_NS" link set "$veth" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$ROUTER_IP"
  in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
  ;;
*) echo "usage: net.sh up | attach NS IP" >&2; exit 2 ;;
esac
