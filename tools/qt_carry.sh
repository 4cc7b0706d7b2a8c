#!/usr/bin/env bash
# Builds .carry/qt.tar.xz: what the serving GUI needs to run headless (Qt's offscreen
# platform) on the GPU machine, which has no PySide6 and whose 80 MB wheel is over what
# travels. PySide6's modules are abi3, so the copies in this venv (Python 3.11) load on
# the device's Python 3.12. Kept: QtCore, QtGui, QtWidgets, QtOpenGL(+Widgets), their
# libQt6 and ICU libraries, the offscreen platform plugin, shiboken6; pyqtgraph, superqt
# and their pure-Python needs; pyzmq and msgspec built for 3.12 (attach); the system
# libraries Qt links against (libGL, libEGL, libX11, libxkbcommon, fontconfig, freetype,
# glib, ...) taken from this machine (glibc 2.36 <= the device's 2.39, so they load there),
# never glibc/libstdc++ themselves; DejaVu fonts and a fonts.conf so text renders.
# On the device (tools/gpu_gui.sh does this):
#   tar xJf .carry/qt.tar.xz -C /tmp
#   export PYTHONPATH=/tmp/qt/site:$PYTHONPATH LD_LIBRARY_PATH=/tmp/qt/lib \
#          FONTCONFIG_FILE=/tmp/qt/fonts/fonts.conf QT_QPA_PLATFORM=offscreen
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SP=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
STAGE=$(mktemp -d)/qt
mkdir -p "$STAGE/site/PySide6/Qt/lib" "$STAGE/site/PySide6/Qt/plugins/platforms" "$STAGE/lib" "$STAGE/fonts"
QT=(QtCore QtGui QtWidgets QtOpenGL QtOpenGLWidgets)
cp "$SP"/PySide6/{__init__.py,_config.py,_git_pyside_version.py} "$STAGE/site/PySide6/"
cp -r "$SP/PySide6/support" "$STAGE/site/PySide6/"
cp "$SP"/PySide6/libpyside6*.so* "$STAGE/site/PySide6/"
for m in "${QT[@]}"; do cp "$SP/PySide6/$m.abi3.so" "$STAGE/site/PySide6/"; done
for l in Core Gui Widgets OpenGL OpenGLWidgets DBus; do cp "$SP/PySide6/Qt/lib/libQt6$l.so.6" "$STAGE/site/PySide6/Qt/lib/"; done
cp "$SP"/PySide6/Qt/lib/libicu*.so.* "$STAGE/site/PySide6/Qt/lib/"
cp "$SP/PySide6/Qt/plugins/platforms/libqoffscreen.so" "$STAGE/site/PySide6/Qt/plugins/platforms/"
# pygments stays behind: only superqt's code-highlighting widget imports it
cp -r "$SP/shiboken6" "$SP/pyqtgraph" "$SP/superqt" "$SP/qtpy" "$STAGE/site/"
find "$STAGE/site" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$STAGE/site/shiboken6/include" "$STAGE/site/pyqtgraph/examples"
# attach's and the scene queries' compiled needs, as 3.12 wheels (prometheus_client is there)
W=$(mktemp -d)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_26_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$W" pyzmq msgspec rapidfuzz
for w in "$W"/*.whl; do $PY -m zipfile -e "$w" "$STAGE/site/"; done
# system libraries the Qt modules and the plugin link against, minus the C/C++ runtime
for f in "$STAGE"/site/PySide6/*.abi3.so "$STAGE/site/PySide6/Qt/plugins/platforms/libqoffscreen.so"; do
  LD_LIBRARY_PATH="$STAGE/site/PySide6/Qt/lib:$STAGE/site/PySide6:$STAGE/site/shiboken6" ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -v -E "/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so" \
  | grep -v "$STAGE" | while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
cp /usr/share/fonts/truetype/dejavu/DejaVuSans{,-Bold,Mono}.ttf "$STAGE/fonts/"
cat > "$STAGE/fonts/fonts.conf" <<'XML'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>/tmp/qt/fonts</dir><cachedir>/tmp/qt/fontcache</cachedir></fontconfig>
XML
mkdir -p .carry
tar cJf .carry/qt.tar.xz -C "$(dirname "$STAGE")" qt
ls -la .carry/qt.tar.xz
