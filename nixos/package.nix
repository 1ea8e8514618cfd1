# machnet, built from this checkout: pkgs.callPackage ./package.nix { }
{ lib
, stdenv
, rustPlatform
, installShellFiles
}:

let
  # Only what the build and postInstall read, so editing tests or docs does not
  # change the source hash. cleanSourceWith rather than lib.fileset, which needs
  # Nix 2.14 or later, so that older nix-instantiate (Debian's 2.8) evaluates it.
  src = lib.cleanSourceWith {
    name = "machnet-source";
    src = ./..;
    filter = path: _type:
      let
        relative = lib.removePrefix "${toString ./..}/" (toString path);
        top = builtins.head (lib.splitString "/" relative);
      in
      builtins.elem top [ "Cargo.toml" "Cargo.lock" "src" "man" "etc" "dbus" ];
  };
in
rustPlatform.buildRustPackage {
  pname = "machnet";
  inherit ((lib.importTOML ../Cargo.toml).package) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # The test suite needs root, a private systemd-machined and network namespaces,
  # none of which the build sandbox has; the project's CI runs it.
  doCheck = false;

  postInstall = ''
    installManPage man/*.1
    install -Dm644 etc/iproute2/rt_protos.d/machnet.conf \
      $out/etc/iproute2/rt_protos.d/machnet.conf
  ''
  # Completions come from running the binary, so not when cross-compiling.
  + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd machnet \
      --bash <($out/bin/machnet generate completions bash) \
      --zsh <($out/bin/machnet generate completions zsh) \
      --fish <($out/bin/machnet generate completions fish)
  '';

  meta = {
    description = "See and change the network inside systemd-nspawn machines: machinectl meets ip route";
    license = [ lib.licenses.mit lib.licenses.asl20 ];
    mainProgram = "machnet";
    # setns, netlink and systemd-machined are Linux-only.
    platforms = lib.platforms.linux;
  };
}
