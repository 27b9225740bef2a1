# The project's source tree is shared read-only into every lab dom0 at /opt/xenwam.
export PYTHONPATH=/opt/xenwam${PYTHONPATH:+:$PYTHONPATH}
# Bytecode: the lab host's for the share, dom0's own for the rest (the image's build).
export PYTHONPYCACHEPREFIX=/var/cache/xenwam/pycache
export PATH=/usr/lib/xen-4.17/bin:$PATH
