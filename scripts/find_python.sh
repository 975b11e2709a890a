# Sourced by the set-up scripts: `find_python` prints a Python 3.12 interpreter found on this
# machine, or fails.
find_python() {
    # 1. an explicit choice; 2. python3.12 on PATH that actually runs (a pyenv shim may refuse);
    # 3. a pyenv-managed 3.12.x, selected through PYENV_VERSION; 4. python3 if it is 3.12+.
    if [ -n "${UNIAPL_PYTHON:-}" ]; then echo "$UNIAPL_PYTHON"; return; fi
    if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1; then
        command -v python3.12; return
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local v
        v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)
        if [ -n "$v" ]; then
            echo "$(pyenv root)/versions/$v/bin/python3.12"; return
        fi
    fi
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
        command -v python3; return
    fi
    return 1
}
