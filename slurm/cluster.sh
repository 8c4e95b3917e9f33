#!/usr/bin/env bash
# A real SLURM cluster of 1 or more nodes on this machine (Debian 12, root, no systemd), for
# the integration tests and for trying camvis-launch without a cluster.
#
#   bash slurm/cluster.sh start [--nodes N] [--no-accounting]   install what is missing, configure, start
#   bash slurm/cluster.sh stop                      stop every daemon, in reverse order
#   bash slurm/cluster.sh status                    one line per daemon + one per node (exit 3 if down)
#   bash slurm/cluster.sh restart [--nodes N] [--no-accounting]
#   bash slurm/cluster.sh kill-node NAME            a node death: SIGKILL its PID namespace, jobs and all
#   bash slurm/cluster.sh revive-node NAME          start that node's slurmd again, wait until it is idle
#
# --nodes N (default: the layout of the last start, else 1): one node is named $(hostname -s),
# N > 1 are n1..nN; each node is its own slurmd (own port, spool, log) running as PID 1 of its
# own PID namespace, so killing the namespace's init kills everything on that node.
#
# Facts behind every choice here: slurm/README.md. Environment knobs:
#   CAMVIS_SLURM_STATE (default /var/lib/camvis-slurm), CAMVIS_SLURM_PARTITION (debug),
#   CAMVIS_SLURM_CPUS (8: SLURM's view of the node, over-subscribing the real cores on purpose).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${CAMVIS_SLURM_STATE:-/var/lib/camvis-slurm}"
PARTITION="${CAMVIS_SLURM_PARTITION:-debug}"
CPUS="${CAMVIS_SLURM_CPUS:-8}"        # over all nodes together
NODES=""                              # --nodes, else $STATE/nodes, else 1
BASE_PORT=17000                       # node i listens on BASE_PORT + i
CONF_DIR=/etc/slurm
SLURM_CONF="$CONF_DIR/slurm.conf"
DBD_CONF="$CONF_DIR/slurmdbd.conf"
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_PID="$STATE/mysql/mariadbd.pid"   # a dir of its own: mariadbd writes as user mysql
MUNGE_PID=/run/munge/munged.pid
HOST="$(hostname -s)"
ACCOUNTING=1

say() { printf 'slurm: %s\n' "$*"; }
die() { printf 'slurm: error: %s\n' "$*" >&2; exit 1; }

pid_of() {  # the live pid recorded in a pid file, or nothing
  local file=$1 pid
  [[ -r $file ]] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
  local limit=$1 what=$2; shift 2
  local tries=$((limit * 5))
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not come up within ${limit}s (logs: $STATE/log/)"
}

# ------------------------------------------------------------------ install

install_packages() {
  local need=() pkgs=(slurmctld slurmd slurm-client munge)
  ((ACCOUNTING)) && pkgs+=(mariadb-server slurmdbd)
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  ((${#need[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing packages (${need[*]}): run as root to install them"
  say "installing ${need[*]} (apt)"
  # Packages must not start their own daemons (no systemd here; we start them ourselves).
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
  local log="$STATE/log/apt.log"
  { apt-get update -q >"$log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >>"$log" 2>&1; } ||
    { ((made_policy)) && rm -f "$policy"; die "apt-get install failed: see $log"; }
  ((made_policy)) && rm -f "$policy"
  return 0
}

# ------------------------------------------------------------------ configuration

node_names() {  # one name per line: the host's for a single node (as ever), else n1..nN
  if ((NODES == 1)); then echo "$HOST"; else for ((i = 1; i <= NODES; i++)); do echo "n$i"; done; fi
}

node_lines() {  # node_lines CPUS MEM: one NodeName line per node, as sed's \n-joined text
  local i=0 name out=""
  while read -r name; do
    i=$((i + 1))
    out+="NodeName=$name NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((BASE_PORT + i)) CPUs=$1 RealMemory=$2 State=UNKNOWN\\n"
  done < <(node_names)
  printf '%s' "${out%\\n}"
}

render() {  # render TEMPLATE: substitute @VARS@ to stdout
  local mem defmem acct cpn
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  [[ -n $mem ]] || die "slurmd -C reported no RealMemory"
  cpn=$((CPUS / NODES)); ((cpn >= 2)) || cpn=2   # the nodes share the machine: split its CPUs
  mem=$((mem * 95 / 100 / NODES))   # <= slurmd -C, else the node goes 'inval'; shared like the CPUs
  defmem=$((mem / cpn))         # without DefMemPerCPU each job takes the whole node
  if ((ACCOUNTING)); then
    acct='AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nJobAcctGatherType=jobacct_gather/linux'
  else
    acct='AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none'
  fi
  sed -e "s|@NODE@|$HOST|g" -e "s|@NODELINES@|$(node_lines "$cpn" "$mem")|" \
      -e "s|@NODELIST@|$(node_names | paste -sd,)|g" -e "s|@DEFMEM@|$defmem|g" \
      -e "s|@STATE@|$STATE|g" -e "s|@PARTITION@|$PARTITION|g" -e "s|@ACCOUNTING@|$acct|g" \
      -e "s|@DBPASS@|$(db_password)|g" "$1"
}

db_password() {  # one random password per machine, kept in the state dir
  local file="$STATE/dbpass"
  [[ -s $file ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$file")
  cat "$file"
}

write_if_changed() {  # write_if_changed DEST MODE < content; returns 0 if it changed
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$dest"
}

configure() {
  mkdir -p "$STATE"/{ctld,d,run,log} "$CONF_DIR"
  local changed=0 name
  while read -r name; do mkdir -p "$STATE/d/$name"; done < <(node_names)
  render "$HERE/slurm.conf.in" | write_if_changed "$SLURM_CONF" 644 && changed=1
  if ((ACCOUNTING)); then
    render "$HERE/slurmdbd.conf.in" | write_if_changed "$DBD_CONF" 600 && changed=1
  fi
  ((changed)) && return 0 || return 1
}

running() { pid_of "$STATE/run/slurmctld.pid" >/dev/null || ls "$STATE"/run/node-*.pid >/dev/null 2>&1; }

# ------------------------------------------------------------------ daemons

start_munge() {
  pid_of "$MUNGE_PID" >/dev/null && return 0
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  runuser -u munge -- munged
  wait_for 10 munged munge -n
}

start_mariadb() {
  pid_of "$MYSQL_PID" >/dev/null && return 0
  install -d -o mysql -g mysql -m 755 /run/mysqld "$STATE/mysql"
  if [[ ! -d /var/lib/mysql/mysql ]]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1
  fi
  setsid -f mariadbd --user=mysql --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
    --log-error="$STATE/mysql/mariadb.log" </dev/null >/dev/null 2>&1
  wait_for 30 "mariadbd (log: $STATE/mysql/mariadb.log)" mariadb-admin --socket="$MYSQL_SOCK" ping
  # root logs in by unix socket; slurmdbd uses its own user with the generated password.
  mariadb --socket="$MYSQL_SOCK" <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$(db_password)';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$(db_password)';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_slurmdbd() {
  pid_of "$STATE/run/slurmdbd.pid" >/dev/null && return 0
  slurmdbd </dev/null >>"$STATE/log/slurmdbd.out" 2>&1
  wait_for 30 "slurmdbd (port 6819)" port_open 6819
}

start_slurmctld() {
  pid_of "$STATE/run/slurmctld.pid" >/dev/null && return 0
  slurmctld </dev/null >>"$STATE/log/slurmctld.out" 2>&1
  wait_for 30 slurmctld scontrol ping
}

node_pidfile() { echo "$STATE/run/node-$1.pid"; }   # the host pid of the node's `unshare`

node_init() {  # the host pid of a node's PID-namespace init (the pid file inside it may say 1)
  local u first
  u=$(pid_of "$(node_pidfile "$1")") || return 1
  first=$(cat "/proc/$u/task/$u/children" 2>/dev/null) || return 1   # "pid " with no newline
  first=${first%% *}
  [[ -n $first ]] && echo "$first"
}

start_node() {  # slurmd -N NAME as PID 1 of a new PID namespace (a node death kills the namespace)
  local name=$1
  pid_of "$(node_pidfile "$name")" >/dev/null && return 0
  mkdir -p "$STATE/d/$name"
  # PID 1 ignores TERM without a handler: the trap passes it on to slurmd, so `stop` works.
  setsid unshare --pid --fork --kill-child --mount-proc bash -c \
    'trap "kill -TERM \$p" TERM; slurmd -D -N "$0" & p=$!; while kill -0 $p 2>/dev/null; do wait $p; done' \
    "$name" </dev/null >>"$STATE/log/slurmd-$name.out" 2>&1 &
  echo $! >"$(node_pidfile "$name")"
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }

wait_node_idle() {  # wait_node_idle NAME
  local state
  for ((i = 0; i < 150; i++)); do
    state=$(node_state "$1")
    case $state in
      idle|mixed|allocated|completing) return 0 ;;
      down*|drain*|fail*) scontrol update NodeName="$1" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "node $1 is '${state:-unknown}', not idle, after 30s (logs: $STATE/log/)"
}

stop_node() {  # TERM to the namespace's init (its trap stops slurmd); the namespace then ends
  local name=$1 u init
  u=$(pid_of "$(node_pidfile "$name")") || { rm -f "$(node_pidfile "$name")"; return 0; }
  init=$(node_init "$name") && kill -TERM "$init" 2>/dev/null || kill -TERM "$u" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$u" 2>/dev/null || { rm -f "$(node_pidfile "$name")"; say "stopped node $name"; return 0; }
    sleep 0.2
  done
  kill -KILL "${init:-$u}" "$u" 2>/dev/null || true
  rm -f "$(node_pidfile "$name")"
  say "killed node $name (did not exit on TERM within 30s)"
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait for exit (KILL after 30 s)
  local name=$1 pid
  pid=$(pid_of "$2") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { say "stopped $name"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $name (did not exit on TERM within 30s)"
}

# ------------------------------------------------------------------ commands

known_node() { grep -qxF "$1" < <(sinfo -h -N -o %N 2>/dev/null) || die "no node '$1' (nodes: $(sinfo -h -N -o %N | sort -u | paste -sd' '))"; }

cmd_kill_node() {  # a node death: SIGKILL the namespace init; the kernel kills every process in it
  local name=$1 u init
  known_node "$name"
  u=$(pid_of "$(node_pidfile "$name")") || die "node $name is not running"
  init=$(node_init "$name") || die "node $name has no namespace init (pid $u)"
  kill -KILL "$init"
  for ((i = 0; i < 50; i++)); do kill -0 "$u" 2>/dev/null || break; sleep 0.2; done
  rm -f "$(node_pidfile "$name")"
  say "killed node $name (SIGKILL to its init, host pid $init; SLURM marks it DOWN in ~12 s)"
}

cmd_revive_node() {
  local name=$1
  known_node "$name"
  start_node "$name"
  wait_node_idle "$name"
  say "node $name is back: $(node_state "$name")"
}

layout() {  # NODES from --nodes, else the last start's layout, else 1
  [[ -n $NODES ]] && return 0
  NODES=$(cat "$STATE/nodes" 2>/dev/null || echo 1)
  [[ $NODES =~ ^[1-9][0-9]*$ ]] || NODES=1
}

cmd_start() {
  mkdir -p "$STATE/log"
  layout
  if ((ACCOUNTING)) && [[ -f $SLURM_CONF ]] && grep -q 'accounting_storage/none' "$SLURM_CONF" \
     && pid_of "$STATE/run/slurmctld.pid" >/dev/null; then
    say "running without accounting; 'bash slurm/cluster.sh restart' to enable it"
    ACCOUNTING=0
  fi
  install_packages
  if configure && running; then
    say "configuration changed (layout or template): restarting to apply it"
    cmd_stop
  fi
  echo "$NODES" >"$STATE/nodes"
  local t0=$SECONDS name
  start_munge
  if ((ACCOUNTING)); then start_mariadb; start_slurmdbd; fi
  start_slurmctld
  while read -r name; do start_node "$name"; done < <(node_names)
  while read -r name; do wait_node_idle "$name"; done < <(node_names)
  ((SECONDS - t0 > 0)) && say "started in $((SECONDS - t0))s"
  cmd_status
}

cmd_stop() {
  local file
  stop_pid slurmd "$STATE/run/slurmd.pid"   # a slurmd of the layout before nodes had namespaces
  for file in "$STATE"/run/node-*.pid; do
    [[ -e $file ]] || continue
    file=${file##*/node-}; stop_node "${file%.pid}"
  done
  stop_pid slurmctld "$STATE/run/slurmctld.pid"
  stop_pid slurmdbd "$STATE/run/slurmdbd.pid"
  stop_pid mariadbd "$MYSQL_PID"
  stop_pid munged "$MUNGE_PID"
  return 0
}

cmd_status() {
  local down=0 pid name file acct=0
  [[ -f $SLURM_CONF ]] && grep -q 'accounting_storage/slurmdbd' "$SLURM_CONF" && acct=1
  layout
  local entries=("munged:$MUNGE_PID" "mariadbd:$MYSQL_PID" "slurmdbd:$STATE/run/slurmdbd.pid"
                 "slurmctld:$STATE/run/slurmctld.pid")
  while read -r name; do entries+=("slurmd $name:$(node_pidfile "$name")"); done < <(node_names)
  for entry in "${entries[@]}"; do
    name=${entry%%:*}; file=${entry#*:}
    if [[ $name == mariadbd || $name == slurmdbd ]] && ((!acct)); then continue; fi
    if pid=$(pid_of "$file"); then
      printf '  %-12s running (pid %s)\n' "$name" "$pid"
    else
      printf '  %-12s stopped\n' "$name"; down=1
    fi
  done
  if ! pid_of "$STATE/run/slurmctld.pid" >/dev/null; then
    say "down ('bash slurm/cluster.sh start' starts it)"
    return 3
  fi
  sinfo -h -N -o '  node %N: %T, cpus %c, mem %m MB, partition %P' 2>/dev/null || true
  if ((down)); then
    say "partly down ('bash slurm/cluster.sh start' starts what is missing, revive-node one node)"
    return 3
  fi
  say "up: $NODES node(s), accounting: $( ((acct)) && echo slurmdbd || echo none)"
}

main() {
  local cmd=${1:-} target=""
  shift || true
  if [[ $cmd == kill-node || $cmd == revive-node ]]; then
    target=${1:-}; shift || true
    [[ -n $target ]] || die "$cmd needs a node name (see: bash slurm/cluster.sh status)"
  fi
  while (($#)); do
    case $1 in
      --no-accounting) ACCOUNTING=0 ;;
      --nodes) NODES=${2:-}; shift
               [[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes needs a whole number >= 1, got '$NODES'" ;;
      --nodes=*) NODES=${1#--nodes=}
               [[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes needs a whole number >= 1, got '$NODES'" ;;
      *) die "unknown option '$1' (known: --nodes N, --no-accounting)" ;;
    esac
    shift
  done
  case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) layout; cmd_stop; cmd_start ;;
    kill-node) cmd_kill_node "$target" ;;
    revive-node) cmd_revive_node "$target" ;;
    *) echo "usage: bash slurm/cluster.sh {start|stop|status|restart} [--nodes N] [--no-accounting]" \
            "| {kill-node|revive-node} NAME" >&2; exit 2 ;;
  esac
}

main "$@"
