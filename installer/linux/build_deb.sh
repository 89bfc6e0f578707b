#!/usr/bin/env bash
# Wrap PyInstaller's dist/duet/ into dist/duet_<version>_<arch>.deb (run by `make package`).
# Layout: /opt/duet (the one-folder app), /usr/bin/duet (a relative link, so the package also runs
# when unpacked into a scratch root with `dpkg -x`), the desktop entry and the hicolor icons.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x dist/duet/duet ] || { echo "dist/duet/duet is missing: run PyInstaller first (make package)" >&2; exit 2; }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
ARCH=$(dpkg --print-architecture)
STAGE=build/deb/duet_${VERSION}_${ARCH}
OUT=dist/duet_${VERSION}_${ARCH}.deb
rm -rf "$STAGE" && mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications"
cp -a dist/duet "$STAGE/opt/duet"
ln -s ../../opt/duet/duet "$STAGE/usr/bin/duet"
install -m 644 installer/linux/duet.desktop "$STAGE/usr/share/applications/duet.desktop"
for png in assets/icons/duet-*.png; do
	size=$(basename "$png" .png); size=${size#duet-}
	install -D -m 644 "$png" "$STAGE/usr/share/icons/hicolor/${size}x${size}/apps/duet.png"
done
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
# Qt's xcb platform plugin and OpenGL come from the system (as for any Qt app); speech and audio are
# optional (Recommends); python3-venv is what the trainer's private PyTorch environment is made with.
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: duet
Version: ${VERSION}
Architecture: ${ARCH}
Maintainer: Duet developers <duet@localhost>
Installed-Size: ${INSTALLED_KB}
Depends: libc6, libegl1, libgl1, libglib2.0-0, libfontconfig1, libdbus-1-3, libxkbcommon0, libxkbcommon-x11-0, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render-util0, libxcb-shape0, libxcb-xinerama0, libxcb-xkb1, libx11-xcb1
Recommends: espeak-ng, libportaudio2, python3-venv
Section: video
Priority: optional
Description: desktop assistant that watches with you and speaks up
 Duet watches your screen, your webcam or a video and comments by itself when
 something is worth saying, with MMDuet2 (Qwen2.5-VL) on llama.cpp, offline.
 A small demo model is included, so it narrates without any download.
CONTROL
# gzip -6: every dpkg reads it, and on a 2-core machine it is minutes faster than xz (or gzip -9) for ~0.5 GB.
dpkg-deb --root-owner-group -Zgzip -z6 --build "$STAGE" "$OUT" >/dev/null
echo "$OUT: $(du -h "$OUT" | cut -f1) (installed ${INSTALLED_KB} KB)"
