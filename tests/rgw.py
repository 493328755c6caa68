"""The S3 tests' gateway: the throwaway Ceph RADOS Gateway of contrib/ceph_rgw.py, which the
benchmark's remotes part starts too."""

from contrib.ceph_rgw import ACCESS_KEY, SECRET_KEY, Gateway, start

__all__ = ["ACCESS_KEY", "SECRET_KEY", "Gateway", "start"]
