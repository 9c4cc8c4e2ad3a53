#!/bin/sh
# hapair's lab supervisor: systemd's Restart=always for one service, inside a node's namespace.
# POSIX sh, run with dash (about 1 MB of memory per service).
#
#   dash supervise.sh NAME PIDFILE LOG DELAY_MS -- COMMAND [ARG...]
#
# Starts COMMAND and writes "PID RESTARTS" to PIDFILE. Whenever it exits, whatever its status,
# logs one line (to LOG and to its own output) and starts it again after DELAY_MS. A service that
# keeps dying within 10 s of its start waits twice as long each time, up to 60 s (never a busy
# loop); once it has run 10 s, the next restart waits DELAY_MS again.
#
# Signals: TERM or INT stops the service (SIGTERM, waits for it to exit) and then exits 0;
# HUP is passed on to the service; USR1 ends the wait before a restart at once (`hapair revive`).
# SIGKILL leaves nothing behind: `hapair` starts COMMAND under `setpriv --pdeathsig KILL`.

name=$1 pidfile=$2 log=$3 delay=$4
shift 4
[ "$1" = -- ] && shift

child='' sleeper='' stop='' now='' intr='' restarts=0 fast=0

say() {
    line="$(date '+%Y-%m-%d %H:%M:%S') supervisor: $name $*"
    printf '%s\n' "$line" >>"$log"
    printf '%s\n' "$line"
}

on_stop() {
    intr=1 stop=1
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap on_stop TERM INT
trap 'intr=1; [ -n "$child" ] && kill -HUP "$child" 2>/dev/null' HUP
trap 'intr=1 now=1; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null' USR1

while [ -z "$stop" ]; do
    read -r t0 _ </proc/uptime
    "$@" &
    child=$!
    printf '%s %s\n' "$child" "$restarts" >"$pidfile.new" && mv -f "$pidfile.new" "$pidfile"
    [ -n "$stop" ] && kill -TERM "$child" 2>/dev/null
    while :; do
        intr=''
        wait "$child" 2>/dev/null
        rc=$?
        # A trapped signal ends `wait` early (status > 128): wait again while the child lives.
        if [ -n "$intr" ] && [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then
            continue
        fi
        break
    done
    child=''
    [ -n "$stop" ] && break
    read -r t1 _ </proc/uptime
    ran=$((${t1%.*} - ${t0%.*}))
    if [ "$ran" -lt 10 ]; then fast=$((fast + 1)); else fast=1; fi
    pause=$delay i=1
    while [ "$i" -lt "$fast" ] && [ "$pause" -lt 60000 ]; do
        pause=$((pause * 2)) i=$((i + 1))
    done
    [ "$pause" -gt 60000 ] && pause=60000
    secs=$(printf '%d.%03d' $((pause / 1000)) $((pause % 1000)))
    if [ "$rc" -gt 128 ]; then
        how="killed by signal $((rc - 128))"
    else
        how="exited with status $rc"
    fi
    restarts=$((restarts + 1))
    say "$how after $ran s; restart $restarts in $secs s"
    now=''
    sleep "$secs" &
    sleeper=$!
    while :; do
        wait "$sleeper"
        { [ -n "$stop" ] || [ -n "$now" ]; } && break
        kill -0 "$sleeper" 2>/dev/null || break
    done
    kill "$sleeper" 2>/dev/null
    wait "$sleeper" 2>/dev/null
    sleeper=''
done
say "stopped (last exit status ${rc:-none})"
exit 0
