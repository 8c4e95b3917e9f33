#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian 12, root, no systemd), for the
# integration tests and for trying camvis-launch without a cluster.
#
#   bash slurm/cluster.sh start [--no-accounting]   install what is missing, configure, start
#   bash slurm/cluster.sh stop                      stop every daemon, in reverse order
#   bash slurm/cluster.sh status                    one line per daemon + the node (exit 3 if down)
#   bash slurm/cluster.sh restart [--no-accounting]
#
# Facts behind every choice here: slurm/README.md. Environment knobs:
#   CAMVIS_SLURM_STATE (default /var/lib/camvis-slurm), CAMVIS_SLURM_PARTITION (debug),
#   CAMVIS_SLURM_CPUS (8: SLURM's view of the node, over-subscribing the real cores on purpose).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${CAMVIS_SLURM_STATE:-/var/lib/camvis-slurm}"
PARTITION="${CAMVIS_SLURM_PARTITION:-debug}"
CPUS="${CAMVIS_SLURM_CPUS:-8}"
CONF_DIR=/etc/slurm
SLURM_CONF="$CONF_DIR/slurm.conf"
DBD_CONF="$CONF_DIR/slurmdbd.conf"
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_PID="$STATE/mysql/mariadbd.pid"   # a dir of its own: mariadbd writes as user mysql
MUNGE_PID=/run/munge/munged.pid
NODE="$(hostname -s)"
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

render() {  # render TEMPLATE: substitute @VARS@ to stdout
  local mem defmem acct
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  [[ -n $mem ]] || die "slurmd -C reported no RealMemory"
  mem=$((mem * 95 / 100))       # <= slurmd -C, else the node goes 'inval'
  defmem=$((mem / CPUS))        # without DefMemPerCPU each job takes the whole node
  if ((ACCOUNTING)); then
    acct='AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nJobAcctGatherType=jobacct_gather/linux'
  else
    acct='AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none'
  fi
  sed -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$mem|g" -e "s|@DEFMEM@|$defmem|g" \
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
  local changed=0
  render "$HERE/slurm.conf.in" | write_if_changed "$SLURM_CONF" 644 && changed=1
  if ((ACCOUNTING)); then
    render "$HERE/slurmdbd.conf.in" | write_if_changed "$DBD_CONF" 600 && changed=1
  fi
  if ((changed)) && { pid_of "$STATE/run/slurmctld.pid" || pid_of "$STATE/run/slurmd.pid"; } >/dev/null; then
    say "configuration changed while running: 'bash slurm/cluster.sh restart' applies it"
  fi
  return 0
}

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

start_slurmd() {
  pid_of "$STATE/run/slurmd.pid" >/dev/null && return 0
  slurmd </dev/null >>"$STATE/log/slurmd.out" 2>&1
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

wait_node_idle() {
  local state
  for ((i = 0; i < 150; i++)); do
    state=$(node_state)
    case $state in
      idle|mixed|allocated|completing) return 0 ;;
      down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "node $NODE is '${state:-unknown}', not idle, after 30s (logs: $STATE/log/)"
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

cmd_start() {
  mkdir -p "$STATE/log"
  if ((ACCOUNTING)) && [[ -f $SLURM_CONF ]] && grep -q 'accounting_storage/none' "$SLURM_CONF" \
     && pid_of "$STATE/run/slurmctld.pid" >/dev/null; then
    say "running without accounting; 'bash slurm/cluster.sh restart' to enable it"
    ACCOUNTING=0
  fi
  install_packages
  configure
  local t0=$SECONDS
  start_munge
  if ((ACCOUNTING)); then start_mariadb; start_slurmdbd; fi
  start_slurmctld
  start_slurmd
  wait_node_idle
  ((SECONDS - t0 > 0)) && say "started in $((SECONDS - t0))s"
  cmd_status
}

cmd_stop() {
  stop_pid slurmd "$STATE/run/slurmd.pid"
  stop_pid slurmctld "$STATE/run/slurmctld.pid"
  stop_pid slurmdbd "$STATE/run/slurmdbd.pid"
  stop_pid mariadbd "$MYSQL_PID"
  stop_pid munged "$MUNGE_PID"
  return 0
}

cmd_status() {
  local down=0 pid name file acct=0
  [[ -f $SLURM_CONF ]] && grep -q 'accounting_storage/slurmdbd' "$SLURM_CONF" && acct=1
  for entry in "munged:$MUNGE_PID" "mariadbd:$MYSQL_PID" "slurmdbd:$STATE/run/slurmdbd.pid" \
               "slurmctld:$STATE/run/slurmctld.pid" "slurmd:$STATE/run/slurmd.pid"; do
    name=${entry%%:*}; file=${entry#*:}
    if [[ $name == mariadbd || $name == slurmdbd ]] && ((!acct)); then continue; fi
    if pid=$(pid_of "$file"); then
      printf '  %-10s running (pid %s)\n' "$name" "$pid"
    else
      printf '  %-10s stopped\n' "$name"; down=1
    fi
  done
  if ((down)); then
    say "down ('bash slurm/cluster.sh start' starts it)"
    return 3
  fi
  local line
  line=$(sinfo -h -o '%P %T %c %m' 2>/dev/null | head -n1)
  say "up: node $NODE, partition/state/cpus/mem: ${line:-?}; accounting: $( ((acct)) && echo slurmdbd || echo none)"
}

main() {
  local cmd=${1:-}
  shift || true
  for arg in "$@"; do
    case $arg in
      --no-accounting) ACCOUNTING=0 ;;
      *) die "unknown option '$arg' (known: --no-accounting)" ;;
    esac
  done
  case $cmd in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) echo "usage: bash slurm/cluster.sh {start|stop|status|restart} [--no-accounting]" >&2; exit 2 ;;
  esac
}

main "$@"
