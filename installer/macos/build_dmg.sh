#!/usr/bin/env bash
# macOS: Duet.app (PyInstaller's BUNDLE step in build_app.spec, with installer/macos/Info.plist)
# → dist/Duet-<version>-<arch>.dmg. Runs on a Mac only (hdiutil, codesign); see installer/README.md.
# Signing and notarization need an Apple Developer ID: set MACOS_SIGN_IDENTITY (and, for notarytool,
# a keychain profile in MACOS_NOTARY_PROFILE); without them the .dmg is ad-hoc signed, and Gatekeeper
# asks the user to confirm the first start (right-click → Open).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(uname)" = Darwin ] || { echo "build_dmg.sh runs on macOS only" >&2; exit 2; }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
ARCH=$(uname -m)
plutil -replace CFBundleShortVersionString -string "$VERSION" installer/macos/Info.plist
plutil -replace CFBundleVersion -string "$VERSION" installer/macos/Info.plist
pyinstaller --noconfirm --clean --workpath build/pyinstaller --distpath dist build_app.spec
APP=dist/Duet.app
codesign --force --deep --options runtime --sign "${MACOS_SIGN_IDENTITY:--}" "$APP"
STAGE=build/dmg && rm -rf "$STAGE" && mkdir -p "$STAGE" && cp -R "$APP" "$STAGE/" && ln -s /Applications "$STAGE/Applications"
DMG=dist/Duet-${VERSION}-${ARCH}.dmg
hdiutil create -volname "Duet ${VERSION}" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
if [ -n "${MACOS_NOTARY_PROFILE:-}" ]; then
	xcrun notarytool submit "$DMG" --keychain-profile "$MACOS_NOTARY_PROFILE" --wait
	xcrun stapler staple "$DMG"
fi
echo "$DMG"
