; Inno Setup script for Duet on Windows: wraps PyInstaller's dist\duet\ (built on Windows by
; `pyinstaller build_app.spec`) into DuetSetup-<version>-<variant>.exe.
; Build: iscc /DAppVersion=0.1.0 /DVariant=cpu installer\windows\duet.iss   (see installer/README.md)
; Per-user install (no administrator rights needed); the user's settings, sessions, models and the
; trainer's PyTorch runtime live in %LOCALAPPDATA%\duet and are kept on uninstall unless asked.
#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef Variant
  #define Variant "cpu"
#endif

[Setup]
AppId={{6C0E1D2B-3F5A-4E7B-9C1D-D0E7A1B2C3D4}
AppName=Duet
AppVersion={#AppVersion}
AppVerName=Duet {#AppVersion}
DefaultDirName={localappdata}\Programs\Duet
DefaultGroupName=Duet
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=DuetSetup-{#AppVersion}-{#Variant}
SetupIconFile=..\..\assets\icons\duet.ico
UninstallDisplayIcon={app}\duet.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"

[Files]
Source: "..\..\dist\duet\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Duet"; Filename: "{app}\duet.exe"
Name: "{group}\Uninstall Duet"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Duet"; Filename: "{app}\duet.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\duet.exe"; Description: "Start Duet"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only the program folder; the user's data (%LOCALAPPDATA%\duet) is theirs.
Type: filesandordirs; Name: "{app}"
