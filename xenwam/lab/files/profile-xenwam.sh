# The project's source tree is shared read-only into every lab dom0 at /opt/xenwam.
export PYTHONPATH=/opt/xenwam${PYTHONPATH:+:$PYTHONPATH}
export PATH=/usr/lib/xen-4.17/bin:$PATH
