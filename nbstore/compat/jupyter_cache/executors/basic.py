"""jupyter-cache 1.0's `executors.basic`: its executor class names, as nbstore's executors."""

from nbstore.executors.parallel import LocalParallelExecutor as JupyterExecutorLocalMproc
from nbstore.executors.parallel import TempParallelExecutor as JupyterExecutorTempMproc
from nbstore.executors.serial import LocalSerialExecutor as JupyterExecutorLocalSerial
from nbstore.executors.serial import TempSerialExecutor as JupyterExecutorTempSerial

__all__ = [
    "JupyterExecutorLocalMproc",
    "JupyterExecutorLocalSerial",
    "JupyterExecutorTempMproc",
    "JupyterExecutorTempSerial",
]
