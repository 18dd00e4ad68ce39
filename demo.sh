#!/usr/bin/env bash
# demo.sh: the README walkthrough, run and checked.
#
# Two pods (frontend 10.13.0.2 identity 1001, backend 10.13.0.3 identity
# 1002) are created through the ebpfcni CNI plugin in throwaway namespaces:
# a "node" namespace plays the host, so the machine's own network is never
# touched. Each step prints the command and PASS/FAIL against what it should
# show; the exit status is 0 only when every expectation held. Everything
# the demo creates is removed on success, failure or Ctrl-C.
#
# Environment: BIN_DIR (default ./bin, built by ./build.sh when missing),
# PIN_DIR (default /sys/fs/bpf/tc/globals; the demo refuses to run if maps
# are already pinned there, so as not to disturb a live setup: point it at
# e.g. /sys/fs/bpf/ebpfcni_demo then), CNI_PATH (IPAM plugins, default
# /usr/lib/cni).
set -uo pipefail
cd "$(dirname "$0")"
[[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"

BIN_DIR=$(realpath -m "${BIN_DIR:-./bin}")
PIN_DIR=${PIN_DIR:-/sys/fs/bpf/tc/globals}
CNI_PATH=${CNI_PATH:-/usr/lib/cni}
FRONTEND_IP=10.13.0.2 BACKEND_IP=10.13.0.3

if [[ $EUID -ne 0 ]]; then
  echo "demo.sh needs root (network namespaces, BPF): sudo $0" >&2
  exit 1
fi

passes=0 failures=0
pass() { echo "   PASS: $*"; passes=$((passes + 1)); }
fail() { echo "   FAIL: $*"; failures=$((failures + 1)); }
step() { printf '\n== %s\n' "$*"; }
# Prints a command the way a user would type it, then runs it.
show() { echo "\$ $*"; "$@"; }
# expect ok|fail DESCRIPTION COMMAND...: runs the command and checks its outcome.
expect() {
  local want=$1 what=$2; shift 2
  echo "\$ $*"
  if "$@"; then
    [[ $want == ok ]] && pass "$what" || fail "$what (it succeeded)"
  else
    [[ $want == fail ]] && pass "$what" || fail "$what (it failed)"
  fi
}

# --- set up ------------------------------------------------------------------
scripts/install-deps.sh demo || exit 1
if [[ ! -x $BIN_DIR/ebpfcni || ! -x $BIN_DIR/endpointctl || ! -x $BIN_DIR/policyctl || ! -x $BIN_DIR/ebpfcni-agent ]]; then
  ./build.sh || exit 1
fi
endpointctl() { "$BIN_DIR/endpointctl" --pin-dir "$PIN_DIR" "$@"; }
policyctl() { "$BIN_DIR/policyctl" --pin-dir "$PIN_DIR" "$@"; }

if [[ -n $(policyctl pins) ]]; then
  echo "maps are already pinned in $PIN_DIR; run the demo with PIN_DIR=/sys/fs/bpf/ebpfcni_demo" >&2
  exit 1
fi

# The topmost directory of PIN_DIR that does not exist yet: removed again at the end.
created_dir='' d=$PIN_DIR
while [[ ! -e $d ]]; do created_dir=$d; d=$(dirname "$d"); done

suffix=$$
node=ebpfcni-demo-node-$suffix frontend=ebpfcni-demo-frontend-$suffix backend=ebpfcni-demo-backend-$suffix
work=$(mktemp -d /tmp/ebpfcni-demo.XXXXXX)
httpd_pid="" mounted_tracefs="" monitor_pid="" agent_pid=""
web=ebpfcni-demo-web-$suffix db=ebpfcni-demo-db-$suffix other=ebpfcni-demo-other-$suffix
shopfront=ebpfcni-demo-shopfront-$suffix shopback=ebpfcni-demo-shopback-$suffix shop_httpd_pid=""

cni() { # cni COMMAND CONTAINER_ID NETNS: runs the plugin from the node namespace, as a runtime would
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=${3:+/run/netns/$3} CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    nsenter --net="/run/netns/$node" -- "$BIN_DIR/ebpfcni" <"$work/net.conflist.json" 2>>"$work/cni.log"
}

cleanup() {
  trap - EXIT INT TERM
  exec 1>&3 2>&4 # a signal may have arrived inside a redirected command
  step "cleaning up"
  [[ -n $httpd_pid ]] && kill "$httpd_pid" 2>/dev/null
  [[ -n $shop_httpd_pid ]] && kill "$shop_httpd_pid" 2>/dev/null
  [[ -n $monitor_pid ]] && kill "$monitor_pid" 2>/dev/null
  if [[ -e /run/netns/$node ]]; then
    cni DEL frontend "$frontend" >/dev/null 2>&1 || echo "warning: CNI DEL frontend failed"
    cni DEL backend "$backend" >/dev/null 2>&1 || echo "warning: CNI DEL backend failed"
    if [[ -n $agent_pid ]]; then
      agent_cni DEL web "$web" net-agent >/dev/null 2>&1
      agent_cni DEL db "$db" net-static-db >/dev/null 2>&1
      agent_cni DEL other "$other" net-static-other >/dev/null 2>&1
      shop_cni DEL frontend "$shopfront" >/dev/null 2>&1
      shop_cni DEL backend "$shopback" >/dev/null 2>&1
    fi
  fi
  [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  for ns in "$frontend" "$backend" "$web" "$db" "$other" "$shopfront" "$shopback" "$node"; do
    [[ -e /run/netns/$ns ]] && ip netns del "$ns"
  done
  # The maps were created by this demo (it refuses to start otherwise).
  policyctl pins | xargs -r rm -f
  d=$PIN_DIR
  while [[ -n $created_dir ]] && rmdir "$d" 2>/dev/null && [[ $d != "$created_dir" ]]; do
    d=$(dirname "$d")
  done
  [[ -n $mounted_tracefs ]] && umount "$mounted_tracefs"
  rm -rf "$work"
  echo "removed namespaces, veths, IPAM state and pinned maps"
}
agent_cni() { # agent_cni COMMAND CONTAINER_ID NETNS CONFIG: the same, with one of the agent-mode configs
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=${3:+/run/netns/$3} CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    nsenter --net="/run/netns/$node" -- "$BIN_DIR/ebpfcni" <"$work/$4.json" 2>>"$work/cni.log"
}
shop_cni() { # shop_cni COMMAND POD NETNS: a pod of namespace "shop" (Kubernetes' CNI_ARGS), label app=POD
  CNI_COMMAND=$1 CNI_CONTAINERID=shop-$2 CNI_NETNS=${3:+/run/netns/$3} CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$2" \
    nsenter --net="/run/netns/$node" -- "$BIN_DIR/ebpfcni" <"$work/net-shop-$2.json" 2>>"$work/cni.log"
}
exec 3>&1 4>&2
trap cleanup EXIT
trap 'echo interrupted >&3; exit 130' INT TERM

cat >"$work/net.conflist.json" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "ebpfcni-demo",
  "type": "ebpfcni",
  "pinDir": "$PIN_DIR",
  "ipam": {
    "type": "host-local",
    "ranges": [[{ "subnet": "10.13.0.0/24", "rangeStart": "10.13.0.2", "gateway": "10.13.0.1" }]],
    "dataDir": "$work/ipam"
  }
}
JSON

# --- 1. pods -----------------------------------------------------------------
step "1. create a node namespace and two pods through the CNI plugin"
show ip netns add "$node"
ip -n "$node" link set lo up
for pod in "$frontend" "$backend"; do
  ip netns add "$pod" && ip -n "$pod" link set lo up
done
echo "\$ CNI_COMMAND=ADD CNI_CONTAINERID=frontend CNI_NETNS=/run/netns/$frontend CNI_IFNAME=eth0 ebpfcni < net.conflist.json"
cni ADD frontend "$frontend" >"$work/frontend.json" && cat "$work/frontend.json"
cni ADD backend "$backend" >"$work/backend.json"
expect ok "frontend got $FRONTEND_IP" grep -q "\"$FRONTEND_IP/24\"" "$work/frontend.json"
expect ok "backend got $BACKEND_IP" grep -q "\"$BACKEND_IP/24\"" "$work/backend.json"
in_frontend() { nsenter --net="/run/netns/$frontend" -- "$@"; }
ping_backend() { in_frontend ping -c 2 -W 1 -i 0.3 -q "$BACKEND_IP" >/dev/null; }
curl_backend() { in_frontend curl -sS --max-time 2 -o /dev/null "http://$BACKEND_IP:8080/"; }
mkdir -p "$work/www" && echo "hello from backend" >"$work/www/index.html"
nsenter --net="/run/netns/$backend" -- busybox httpd -f -p 8080 -h "$work/www" &
httpd_pid=$!
expect fail "no identities yet: ping is dropped (default deny)" ping_backend

# --- 2. endpoints ------------------------------------------------------------
step "2. give the pods their identities"
show endpointctl add --ip "$FRONTEND_IP" --identity 1001
show endpointctl add --ip "$BACKEND_IP" --identity 1002
expect fail "identities but no policy: ping is dropped" ping_backend

# --- 3. policy ---------------------------------------------------------------
step "3. allow 1001 <-> 1002 (symmetric: requests and replies)"
show policyctl allow --src 1001 --dst 1002 --symmetric

# --- 4. traffic passes -------------------------------------------------------
step "4. ping and curl from frontend to backend"
expect ok "ping frontend -> backend" ping_backend
expect ok "curl http://$BACKEND_IP:8080/" curl_backend

# --- 5. one-way policy: replies dropped ---------------------------------------
step "5. remove the reverse rule: requests leave frontend, replies are dropped"
trace_dir=/sys/kernel/tracing
if [[ ! -e $trace_dir/trace_pipe ]]; then
  trace_dir=/sys/kernel/debug/tracing
  if [[ ! -e $trace_dir/trace_pipe ]]; then
    mount -t debugfs none /sys/kernel/debug && mounted_tracefs=/sys/kernel/debug
  fi
fi
show policyctl deny --src 1002 --dst 1001
# The trace buffer is the machine's, shared with everyone who reads it: it
# is neither cleared nor consumed (trace_pipe would take lines from other
# readers). A marker line says where the demo's part starts; the buffer is
# read through the non-consuming `trace` file afterwards.
marker="ebpfcni-demo-$suffix-$RANDOM"
echo "$marker" >"$trace_dir/trace_marker"
expect fail "ping frontend -> backend (replies dropped)" ping_backend
expect fail "curl http://$BACKEND_IP:8080/ (replies dropped)" curl_backend
sed -n "/$marker/,\$p" "$trace_dir/trace" >"$work/trace"

# --- 6. the trace ------------------------------------------------------------
step "6. the verdicts in the trace: cat $trace_dir/trace_pipe"
# The replies enter the node at tc ingress of the backend's host veth.
backend_veth=$(sed -n 's/.*"interfaces":\[{"name":"\([^"]*\)".*/\1/p' "$work/backend.json")
backend_ifindex=$(ip -n "$node" -o link show "$backend_veth" | cut -d: -f1)
drop_line="DROP no-policy $BACKEND_IP -> $FRONTEND_IP id 1002 -> 1001 ifindex $backend_ifindex ingress"
grep -m 3 "$drop_line" "$work/trace" | sed 's/^ */   /'
expect ok "the trace shows the backend's replies dropped at its host veth ($drop_line)" \
  grep -q "$drop_line" "$work/trace"
show policyctl list

# --- 7. flow events ------------------------------------------------------------
step "7. the same verdicts as flow events: policyctl monitor (in the node namespace, where the host veths are)"
in_node() { nsenter --net="/run/netns/$node" -- "$@"; }
in_node "$BIN_DIR/policyctl" --pin-dir "$PIN_DIR" monitor --verdict drop --count 2 --duration 10 \
  >"$work/monitor" 2>"$work/monitor.err" &
monitor_pid=$!
for _ in $(seq 50); do grep -q watching "$work/monitor.err" && break; sleep 0.1; done
echo "\$ policyctl monitor --verdict drop"
ping_backend
wait "$monitor_pid"
sed 's/^/   /' "$work/monitor"
expect ok "the monitor shows the reply dropped, with both identities, at the backend's host veth" \
  grep -q "DROP no-policy $BACKEND_IP (1002) -> $FRONTEND_IP (1001) icmp id [0-9]* from-pod $backend_veth pod backend/eth0" "$work/monitor"
show policyctl stats

# --- 8. a stateful port rule ------------------------------------------------------
step "8. instead: frontend may open TCP 8080 on backend, statefully (its replies pass, nothing else)"
show policyctl flush
show policyctl allow --src 1001 --dst 1002 --port 8080 --stateful
expect ok "curl http://$BACKEND_IP:8080/ (the reply passes as part of the connection)" curl_backend
expect fail "ping frontend -> backend (ICMP is not TCP 8080)" ping_backend
in_backend() { nsenter --net="/run/netns/$backend" -- "$@"; }
expect fail "ping backend -> frontend (backend may not open anything)" \
  in_backend ping -c 1 -W 1 -q "$FRONTEND_IP"
show policyctl ct list

# --- 9. the agent ------------------------------------------------------------------
step "9. the node agent: identities from container labels, addresses from its own IPAM"
socket=$work/agent.sock
echo "\$ ebpfcni-agent --pod-cidr 10.13.1.0/24 --policy-enforcement always &   # only what policy allows"
nsenter --net="/run/netns/$node" -- "$BIN_DIR/ebpfcni-agent" --pin-dir "$PIN_DIR" --socket "$socket" \
  --state-dir "$work/agent-state" --node demo --pod-cidr 10.13.1.0/24 --runtime none --policy-enforcement always 2>"$work/agent.log" &
agent_pid=$!
agent_api() { curl -sS --max-time 5 --unix-socket "$socket" "http://agent$1"; }
for _ in $(seq 100); do agent_api /v1/healthz >/dev/null 2>&1 && break; sleep 0.1; done
agent_ready() { agent_api /v1/healthz >/dev/null; }
expect ok "the agent answers on its socket" agent_ready
conf() { # conf LABEL [STATIC_ADDRESS]: an agent-mode config, with the container's label
  local ipam=''
  [[ -n ${2:-} ]] && ipam=", \"ipam\": {\"type\": \"static\", \"addresses\": [{\"address\": \"$2/24\", \"gateway\": \"10.13.1.1\"}]}"
  printf '{"cniVersion": "1.0.0", "name": "ebpfcni-demo-agent", "type": "ebpfcni", "pinDir": "%s", "agent": "%s", "args": {"cni": {"labels": [{"key": "app", "value": "%s"}]}}%s}\n' \
    "$PIN_DIR" "$socket" "$1" "$ipam"
}
conf web >"$work/net-agent.json"
conf db 10.13.1.200 >"$work/net-static-db.json"
conf other 10.13.1.200 >"$work/net-static-other.json"
cat "$work/net-agent.json"
for pod in "$web" "$db" "$other"; do ip netns add "$pod" && ip -n "$pod" link set lo up; done
echo "\$ CNI_COMMAND=ADD ... ebpfcni < net-agent.json   # web: app=web, address from the agent"
agent_cni ADD web "$web" net-agent >"$work/web.json" && cat "$work/web.json"
echo "\$ CNI_COMMAND=ADD ... ebpfcni < net-static-db.json   # db: app=db on 10.13.1.200 (static IPAM)"
agent_cni ADD db "$db" net-static-db >"$work/db.json"
web_ip=$(sed -n 's/.*"address":"\([0-9.]*\)\/24".*/\1/p' "$work/web.json")
expect ok "web got an address from the agent's pod CIDR ($web_ip)" grep -q '"10.13.1.[0-9]*/24"' "$work/web.json"
identity_of() { endpointctl list | awk -v ip="$1" '$1 == ip { print $2; exit }'; }
web_id=$(identity_of "$web_ip") db_id=$(identity_of 10.13.1.200)
show endpointctl --agent "$socket" list
expect ok "endpointctl shows each address's labels and container" \
  sh -c "'$BIN_DIR/endpointctl' --pin-dir '$PIN_DIR' --agent '$socket' list | grep -q '^ *$web_ip .*app=web.* web/eth0'"
expect fail "a hand entry for web's address is refused (the agent manages it)" \
  endpointctl --agent "$socket" add --ip "$web_ip" --identity 1001
expect ok "identities appeared by themselves: web $web_id, db $db_id (from 256 up)" \
  test "${web_id:-0}" -ge 256 -a "${db_id:-0}" -ge 256 -a "${web_id:-0}" != "${db_id:-0}"
in_web() { nsenter --net="/run/netns/$web" -- "$@"; }
expect fail "ping web -> db: no policy for their identities yet" in_web ping -c 1 -W 1 -q 10.13.1.200
show policyctl allow --src "$web_id" --dst "$db_id" --symmetric
expect ok "ping web -> db, allowed for their identities" in_web ping -c 2 -W 1 -i 0.3 -q 10.13.1.200

step "10. db is deleted, another container (app=other) gets its address: it does not inherit db's permissions"
show agent_cni DEL db "$db" net-static-db
expect fail "10.13.1.200 has no identity once db is gone" sh -c "$BIN_DIR/endpointctl --pin-dir $PIN_DIR list | grep -q '^ *10.13.1.200 '"
show agent_cni ADD other "$other" net-static-other >/dev/null
other_id=$(identity_of 10.13.1.200)
expect ok "the new container on 10.13.1.200 has its own identity ($other_id, not db's $db_id)" \
  test "${other_id:-0}" -ge 256 -a "${other_id:-0}" != "$db_id"
expect fail "ping web -> 10.13.1.200: the rule for db does not apply to other" in_web ping -c 1 -W 1 -q 10.13.1.200

# --- 11. policy by labels -------------------------------------------------------------
step "11. policy by labels: a Kubernetes NetworkPolicy (the agent restarted with Kubernetes' meaning: a pod no policy selects is unrestricted)"
kill "$agent_pid" && wait "$agent_pid"
echo "\$ ebpfcni-agent --pod-cidr 10.13.1.0/24 &   # --policy-enforcement default"
nsenter --net="/run/netns/$node" -- "$BIN_DIR/ebpfcni-agent" --pin-dir "$PIN_DIR" --socket "$socket" \
  --state-dir "$work/agent-state" --node demo --pod-cidr 10.13.1.0/24 --runtime none 2>>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 100); do agent_api /v1/healthz >/dev/null 2>&1 && break; sleep 0.1; done
expect ok "the agent is back, with everything it had" agent_ready
conf frontend >"$work/net-shop-frontend.json"
conf backend >"$work/net-shop-backend.json"
for pod in "$shopfront" "$shopback"; do ip netns add "$pod" && ip -n "$pod" link set lo up; done
echo "\$ CNI_ARGS='K8S_POD_NAMESPACE=shop;K8S_POD_NAME=frontend' ... ebpfcni   # and backend: app=frontend, app=backend in namespace shop"
shop_cni ADD frontend "$shopfront" >"$work/shopfront.json"
shop_cni ADD backend "$shopback" >"$work/shopback.json"
shopback_ip=$(sed -n 's/.*"address":"\([0-9.]*\)\/24".*/\1/p' "$work/shopback.json")
nsenter --net="/run/netns/$shopback" -- busybox httpd -f -p 8080 -h "$work/www" &
shop_httpd_pid=$!
curl_shop() { nsenter --net="/run/netns/$1" -- curl -sS --max-time 2 -o /dev/null "http://$shopback_ip:8080/"; }
for _ in $(seq 20); do curl_shop "$shopfront" 2>/dev/null && break; sleep 0.1; done
expect ok "no policy selects backend yet: web (namespace default) reaches it" curl_shop "$web"
cat >"$work/backend-policy.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: backend-from-frontend
  namespace: shop
spec:
  podSelector:
    matchLabels: { app: backend }
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: { app: frontend }
    ports:
    - { protocol: TCP, port: 8080 }
YAML
sed 's/^/   /' "$work/backend-policy.yaml"
show policyctl --agent "$socket" apply -f "$work/backend-policy.yaml"
show policyctl --agent "$socket" get policies
expect ok "curl frontend -> backend:8080 (the policy allows it)" curl_shop "$shopfront"
expect fail "curl web -> backend:8080 (nothing else may)" curl_shop "$web"
explain() { in_node "$BIN_DIR/policyctl" --pin-dir "$PIN_DIR" --agent "$socket" explain "$@"; }
echo "\$ policyctl explain --from shop/frontend --to shop/backend --port 8080/tcp"
explain --from shop/frontend --to shop/backend --port 8080/tcp >"$work/explain.ok" || true
sed 's/^/   /' "$work/explain.ok"
expect ok "explain runs the program: allowed, by shop/backend-from-frontend" \
  grep -q "shop/backend-from-frontend" "$work/explain.ok"
echo "\$ policyctl explain --from $web_ip --to shop/backend --port 8080/tcp"
explain --from "$web_ip" --to shop/backend --port 8080/tcp >"$work/explain.drop"
explain_status=$?
sed 's/^/   /' "$work/explain.drop"
expect ok "explain: dropped (exit 8), the receiver's ingress is isolated" \
  sh -c "test $explain_status = 8 && grep -q 'policy-isolated' '$work/explain.drop'"
in_node "$BIN_DIR/policyctl" --pin-dir "$PIN_DIR" --agent "$socket" monitor --verdict drop --count 1 --duration 10 \
  >"$work/monitor.shop" 2>"$work/monitor.shop.err" &
monitor_pid=$!
for _ in $(seq 50); do grep -q watching "$work/monitor.shop.err" && break; sleep 0.1; done
echo "\$ policyctl monitor --verdict drop   # while web tries again"
curl_shop "$web" 2>/dev/null
wait "$monitor_pid"
monitor_pid=""
sed 's/^/   /' "$work/monitor.shop"
expect ok "the monitor shows web's denied connection with both pods' labels" \
  sh -c "grep 'policy-isolated' '$work/monitor.shop' | grep 'app=web' | grep -q 'app=backend'"

printf '\n== %d passed, %d failed\n' "$passes" "$failures"
if ((failures == 0)); then
  echo "demo: all expectations held"
  exit 0
fi
echo "demo: some expectations did not hold; CNI plugin log:"
sed 's/^/   /' "$work/cni.log"
exit 1
