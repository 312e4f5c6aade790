#!/usr/bin/env bash
# Installs what the weir-vs-Spark bench needs to run Spark Streaming, under a cache dir:
#   CACHE/venv              a Python venv with PySpark 3.5 from PyPI (its jars: pyspark/jars)
#   CACHE/java/classes      JavaWordCount compiled with javac against those jars
# Usage: setup.sh CACHE_DIR   (default: target/bench). Idempotent: a second run only checks.
# Prints `SPARK_JARS=<dir>`, `PYTHON=<venv python>`, `JAVA_CLASSES=<dir>` as its last lines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${1:-target/bench}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
venv="$cache/venv"
pyspark_spec="${PYSPARK_SPEC:-pyspark>=3.5,<3.6}"

for tool in python3 java javac; do
    command -v "$tool" >/dev/null || { echo "setup.sh: $tool is not on PATH" >&2; exit 1; }
done

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import pyspark, sys; sys.exit(0 if pyspark.__version__.startswith("3.5") else 1)' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pyspark_spec"
fi
jars="$("$venv/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
[ -d "$jars" ] || { echo "setup.sh: PySpark ships no jars directory at $jars" >&2; exit 1; }
ls "$jars"/spark-streaming_*.jar >/dev/null 2>&1 || { echo "setup.sh: no spark-streaming jar in $jars" >&2; exit 1; }

classes="$cache/java/classes"
src="$here/JavaWordCount.java"
if [ ! -f "$classes/JavaWordCount.class" ] || [ "$src" -nt "$classes/JavaWordCount.class" ]; then
    rm -rf "$classes"
    mkdir -p "$classes"
    javac -nowarn -d "$classes" -cp "$jars/*" "$src"
fi

echo "SPARK_JARS=$jars"
echo "PYTHON=$venv/bin/python"
echo "JAVA_CLASSES=$classes"
