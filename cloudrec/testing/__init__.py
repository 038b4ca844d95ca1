"""Real loopback servers for tests and demos: S3 (moto), an S3 fault proxy, HDFS.

``MotoServer``, ``FaultProxy`` and ``HdfsCluster`` start on free ports on
127.0.0.1, are context managers and stop their own processes by pid.
``cloudrec services start|stop|env`` runs all three in the background.
"""
from cloudrec.testing.hdfs import HdfsCluster, hadoop_jars
from cloudrec.testing.servers import (FaultProxy, MotoServer, ServiceError, free_ports,
                                      s3_storage_options)

__all__ = ["MotoServer", "FaultProxy", "HdfsCluster", "ServiceError", "free_ports", "hadoop_jars",
           "s3_storage_options"]
