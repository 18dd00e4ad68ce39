#!/usr/bin/env bash
# demo-cluster.sh: two nodes sharing identities through etcd, run and checked.
#
# etcd (Debian's etcd-server) runs in a "fabric" namespace on a bridge
# (10.0.0.1); two "node" namespaces n1 (10.0.0.11) and n2 (10.0.0.12) hang
# on it, each with its own pin directory and ebpfcni-agent --etcd. A
# frontend pod on n1 and a backend pod on n2 (busybox httpd) are created
# through the CNI plugin; their identities come from etcd and each node
# learns the other's pods and routes to its pod CIDR, and each node's
# label policy knows the other's identities. curl frontend -> backend
# passes with no policy (Kubernetes), is denied by a NetworkPolicy
# isolating the backend, allowed by one taking TCP 8080 from app=frontend
# (each applied on n1 only: through etcd, n2 enforces it), and keeps
# passing while n2's agent is killed and restarted; deleted on n1, n2
# denies again. The machine's own network is never
# touched; everything is removed at the end (also on failure or Ctrl-C).
#
# Environment: BIN_DIR (default ./bin, built by ./build.sh when missing),
# CNI_PATH (default /usr/lib/cni).
set -uo pipefail
cd "$(dirname "$0")"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

BIN_DIR=$(realpath -m "${BIN_DIR:-./bin}")
CNI_PATH=${CNI_PATH:-/usr/lib/cni}

if [[ $EUID -ne 0 ]]; then
  echo "demo-cluster.sh needs root (network namespaces, BPF): sudo $0" >&2
  exit 1
fi

passes=0 failures=0
pass() { echo "   PASS: $*"; passes=$((passes + 1)); }
fail() { echo "   FAIL: $*"; failures=$((failures + 1)); }
step() { printf '\n== %s\n' "$*"; }
show() { echo "\$ $*"; "$@"; }
expect() { # expect ok|fail DESCRIPTION COMMAND...
  local want=$1 what=$2; shift 2
  echo "\$ $*"
  if "$@"; then
    [[ $want == ok ]] && pass "$what" || fail "$what (it succeeded)"
  else
    [[ $want == fail ]] && pass "$what" || fail "$what (it failed)"
  fi
}

scripts/install-deps.sh demo || exit 1
if [[ ! -x /usr/bin/etcd ]]; then
  echo "demo-cluster.sh needs etcd: apt-get install etcd-server" >&2
  exit 1
fi
if [[ ! -x $BIN_DIR/ebpfcni || ! -x $BIN_DIR/policyctl || ! -x $BIN_DIR/endpointctl || ! -x $BIN_DIR/ebpfcni-agent ]]; then
  ./build.sh || exit 1
fi

s=$$
fab=ebpfcni-dc-fab-$s n1=ebpfcni-dc-n1-$s n2=ebpfcni-dc-n2-$s fe=ebpfcni-dc-fe-$s be=ebpfcni-dc-be-$s
pins1=/sys/fs/bpf/ebpfcni_dc_n1_$s pins2=/sys/fs/bpf/ebpfcni_dc_n2_$s
work=$(mktemp -d /tmp/ebpfcni-demo-cluster.XXXXXX)
etcd_pid="" agent1_pid="" agent2_pid="" httpd_pid=""
URL=http://10.0.0.1:2379

cleanup() {
  trap - EXIT INT TERM
  step "cleaning up"
  [[ -n $httpd_pid ]] && kill "$httpd_pid" 2>/dev/null
  [[ -e /run/netns/$n1 && -n $agent1_pid ]] && cni "$n1" DEL fe "$fe" >/dev/null 2>&1
  [[ -e /run/netns/$n2 && -n $agent2_pid ]] && cni "$n2" DEL be "$be" >/dev/null 2>&1
  for pid in $agent1_pid $agent2_pid $etcd_pid; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  for ns in "$fe" "$be" "$n1" "$n2" "$fab"; do [[ -e /run/netns/$ns ]] && ip netns del "$ns"; done
  rm -rf "$pins1" "$pins2" "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cni() { # cni NODE COMMAND CONTAINER_ID NETNS: the plugin from the node namespace, as a runtime would
  CNI_COMMAND=$2 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/$4 CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    nsenter --net="/run/netns/$1" -- "$BIN_DIR/ebpfcni" <"$work/$1.json" 2>>"$work/cni.log"
}
start_agent() { # start_agent NODE PINS NODE_IP PID_VAR: ebpfcni-agent --etcd in the node namespace
  nsenter --net="/run/netns/$1" -- "$BIN_DIR/ebpfcni-agent" --pin-dir "$2" --socket "$work/$1.sock" \
    --state-dir "$work/$1-state" --node "${1%-$s}" --runtime none \
    --etcd "$URL" --node-ip "$3" --cluster-cidr 10.20.0.0/16 --lease-seconds 5 >>"$work/$1.log" 2>&1 &
  printf -v "$4" %s "$!"
}
ready() { curl -sS --max-time 2 --unix-socket "$work/$1.sock" http://agent/v1/healthz >/dev/null 2>&1; }
wait_ready() { for _ in $(seq 100); do ready "$1" && return 0; sleep 0.1; done; return 1; }
identity_of() { # identity_of PINS IP: the identity of IP in that node's endpoint map
  "$BIN_DIR/endpointctl" --pin-dir "$1" list | awk -v ip="$2" '$1 == ip { print $2; exit }'
}
curl_be() { nsenter --net="/run/netns/$fe" -- curl -s --max-time 2 -o /dev/null "http://$be_ip:8080/"; }

step "1. the fabric, etcd, two nodes"
for ns in "$fab" "$n1" "$n2" "$fe" "$be"; do ip netns add "$ns" && ip -n "$ns" link set lo up; done
ip -n "$fab" link add br0 type bridge && ip -n "$fab" addr add 10.0.0.1/24 dev br0 && ip -n "$fab" link set br0 up
i=1
for n in "$n1" "$n2"; do
  ip -n "$n" link add fab0 type veth peer name "vn$i" netns "$fab"
  ip -n "$fab" link set "vn$i" master br0 up
  ip -n "$n" addr add "10.0.0.1$i/24" dev fab0 && ip -n "$n" link set fab0 up
  i=$((i + 1))
done
echo "\$ etcd --listen-client-urls $URL ...   # in the fabric namespace"
nsenter --net="/run/netns/$fab" -- /usr/bin/etcd --name demo --data-dir "$work/etcd" \
  --listen-client-urls "$URL" --advertise-client-urls "$URL" \
  --listen-peer-urls http://10.0.0.1:2380 --initial-advertise-peer-urls http://10.0.0.1:2380 \
  --initial-cluster demo=http://10.0.0.1:2380 --logger zap --log-level warn 2>"$work/etcd.log" &
etcd_pid=$!
echo "\$ ebpfcni-agent --etcd $URL --node n1 --node-ip 10.0.0.11 --cluster-cidr 10.20.0.0/16   # in n1 (and n2: 10.0.0.12)"
start_agent "$n1" "$pins1" 10.0.0.11 agent1_pid
start_agent "$n2" "$pins2" 10.0.0.12 agent2_pid
expect ok "n1's agent joined the cluster and answers" wait_ready "$n1"
expect ok "n2's agent joined the cluster and answers" wait_ready "$n2"
cidr1=$(curl -sS --unix-socket "$work/$n1.sock" http://agent/v1/healthz | sed -n 's/.*"pod_cidr":"\([^"]*\)".*/\1/p')
cidr2=$(curl -sS --unix-socket "$work/$n2.sock" http://agent/v1/healthz | sed -n 's/.*"pod_cidr":"\([^"]*\)".*/\1/p')
expect ok "each node got its own pod CIDR from etcd: n1 $cidr1, n2 $cidr2" test -n "$cidr1" -a -n "$cidr2" -a "$cidr1" != "$cidr2"

step "2. a frontend on n1, a backend on n2"
printf '{"cniVersion": "1.0.0", "name": "ebpfcni", "type": "ebpfcni", "pinDir": "%s", "agent": "%s", "args": {"cni": {"labels": [{"key": "app", "value": "frontend"}]}}}\n' \
  "$pins1" "$work/$n1.sock" >"$work/$n1.json"
printf '{"cniVersion": "1.0.0", "name": "ebpfcni", "type": "ebpfcni", "pinDir": "%s", "agent": "%s", "args": {"cni": {"labels": [{"key": "app", "value": "backend"}]}}}\n' \
  "$pins2" "$work/$n2.sock" >"$work/$n2.json"
echo "\$ CNI_COMMAND=ADD ... ebpfcni   # frontend (app=frontend) on n1, backend (app=backend) on n2"
cni "$n1" ADD fe "$fe" >"$work/fe.json"
cni "$n2" ADD be "$be" >"$work/be.json"
fe_ip=$(sed -n 's/.*"address":"\([0-9.]*\)\/[0-9]*".*/\1/p' "$work/fe.json")
be_ip=$(sed -n 's/.*"address":"\([0-9.]*\)\/[0-9]*".*/\1/p' "$work/be.json")
mkdir -p "$work/www" && echo backend >"$work/www/index.html"
nsenter --net="/run/netns/$be" -- busybox httpd -f -p "$be_ip:8080" -h "$work/www" &
httpd_pid=$!
fe_id=$(identity_of "$pins1" "$fe_ip") be_id=$(identity_of "$pins2" "$be_ip")
expect ok "frontend $fe_ip (identity $fe_id) on n1, backend $be_ip (identity $be_id) on n2" \
  test "${fe_id:-0}" -ge 256 -a "${be_id:-0}" -ge 256 -a "${fe_id:-0}" != "${be_id:-0}"
knows() { test "$(identity_of "$pins1" "$be_ip")" = "$be_id" -a "$(identity_of "$pins2" "$fe_ip")" = "$fe_id"; }
for _ in $(seq 50); do knows && break; sleep 0.1; done
show "$BIN_DIR/endpointctl" --pin-dir "$pins1" list
expect ok "each node's endpoint map has the other node's pod with its identity (from etcd)" knows
show ip -n "$n1" route
expect ok "n1 routes n2's pod CIDR via n2's node IP" sh -c "ip -n '$n1' route | grep -q '^$cidr2 via 10.0.0.12'"

step "3. policy on n1, enforced on both: one NetworkPolicy isolating the backend, one letting the frontend in"
# The other node's identity reaches label policy from etcd with its pod
# (MANAGED: unrestricted); a few tries cover the moment in between.
curl_be_soon() { for _ in $(seq 20); do curl_be && return 0; sleep 0.1; done; return 1; }
expect ok "curl frontend -> backend: no policy selects the backend (Kubernetes: unrestricted)" curl_be_soon
cat >"$work/backend-isolated.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-isolated, namespace: default}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
YAML
cat >"$work/backend-from-frontend.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-from-frontend, namespace: default}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
    ports:
    - {port: 8080, protocol: TCP}
YAML
# n1's agent writes them to etcd and returns once n1 enforces them; n2's
# agent applies them from its watch of etcd (within milliseconds).
on_n2() { # on_n2 NAME: n2 has policy NAME
  for _ in $(seq 50); do
    "$BIN_DIR/policyctl" --agent "$work/$n2.sock" get policies | grep -q "$1" && return 0
    sleep 0.1
  done
  return 1
}
show "$BIN_DIR/policyctl" --agent "$work/$n1.sock" apply -f "$work/backend-isolated.yaml"
expect ok "n2 has backend-isolated (from etcd)" on_n2 backend-isolated
expect fail "curl frontend -> backend: the backend is isolated for ingress" curl_be
show "$BIN_DIR/policyctl" --agent "$work/$n1.sock" apply -f "$work/backend-from-frontend.yaml"
expect ok "n2 has backend-from-frontend (from etcd)" on_n2 backend-from-frontend
show "$BIN_DIR/policyctl" --agent "$work/$n2.sock" get policies
expect ok "curl frontend (n1) -> backend (n2): allowed by backend-from-frontend (n2 knows n1's identity)" curl_be

step "4. n2's agent killed and restarted: traffic keeps its verdicts"
show kill -9 "$agent2_pid"
wait "$agent2_pid" 2>/dev/null
expect ok "curl while n2's agent is down" curl_be
echo "\$ ebpfcni-agent ...   # n2 again, within its lease"
start_agent "$n2" "$pins2" 10.0.0.12 agent2_pid
expect ok "n2's agent is back (same node, same lease)" wait_ready "$n2"
expect ok "curl after n2's agent restarted" curl_be
expect ok "n1 still has the backend with its identity" test "$(identity_of "$pins1" "$be_ip")" = "$be_id"
show "$BIN_DIR/policyctl" --agent "$work/$n1.sock" delete networkpolicy default/backend-from-frontend
gone_on_n2() { for _ in $(seq 50); do on_n2_now backend-from-frontend || return 0; sleep 0.1; done; return 1; }
on_n2_now() { "$BIN_DIR/policyctl" --agent "$work/$n2.sock" get policies | grep -q "$1"; }
expect ok "n2 no longer has backend-from-frontend (deleted on n1, through etcd)" gone_on_n2
expect fail "curl once n2 (the receiver) no longer has backend-from-frontend" curl_be

printf '\n== %d passed, %d failed\n' "$passes" "$failures"
if ((failures == 0)); then
  echo "demo-cluster: all expectations held"
  exit 0
fi
echo "demo-cluster: some expectations did not hold; logs:"
tail -n 20 "$work"/*.log | sed 's/^/   /'
exit 1
