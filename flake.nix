{
  description = "stapsteen: SSH bastion for hospital management networks, as a NixOS appliance";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      appliance = self.nixosConfigurations.appliance.config;
      # russh with stapsteen's patch (README, "The russh patch"): the pristine crate by the hash
      # pinned in Cargo.toml, patched where [patch.crates-io] expects it, as tests/setup.sh does.
      russh = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.metadata.patched.russh;
      russhCrate = pkgs.fetchurl {
        name = "russh-${russh.version}.tar.gz";
        url = "https://static.crates.io/crates/russh/russh-${russh.version}.crate";
        sha256 = russh.sha256;
      };
      # The review console's player, from its npm package; build.rs bundles it into the binary.
      # The hash is the npm registry's integrity value (src/console/web/package-lock.json).
      player = pkgs.fetchurl {
        url = "https://registry.npmjs.org/asciinema-player/-/asciinema-player-3.18.0.tgz";
        hash = "sha512-5gpt2ipFcy4NKmgkv+c/QXnJ9zMicxqWROCOuJqgwwtiYKM8Qe9hnDOvfqke5bW6M2DW/seO3uQYkQ0xeUUVtw==";
      };
    in
    {
      packages.${system} = {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "stapsteen";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          # Only what the build reads, so a work tree's target/ (gigabytes) is never copied.
          src = pkgs.lib.fileset.toSource {
            root = ./.;
            fileset = pkgs.lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./build.rs
              ./clippy.toml
              ./src
              ./policies
              ./tests/bench/throughput.rs
              # The lib tests replay the fuzz seeds.
              ./fuzz/corpus
              ./fuzz/fixtures
            ];
          };
          cargoLock.lockFile = ./Cargo.lock;
          # The appliance has no demo and no software security key (cargo feature `demo`).
          buildNoDefaultFeatures = true;
          # webauthn-rs links OpenSSL.
          nativeBuildInputs = [ pkgs.pkg-config ];
          buildInputs = [ pkgs.openssl ];
          postPatch = ''
            dest=target/run-tests-setup.sh/russh-${russh.version}
            mkdir -p "$dest"
            tar -xzf ${russhCrate} -C "$dest" --strip-components=1
            patch -d "$dest" -p1 < ${./. + "/${russh.patch}"}
          '';
          preBuild = ''
            mkdir -p "$TMPDIR/player"
            tar -xzf ${player} -C "$TMPDIR/player"
            export STAPSTEEN_PLAYER_DIR="$TMPDIR/player/package/dist/bundle"
          '';
          # The namespace tests need root and a network; the VM test covers them.
          cargoTestFlags = [ "--lib" ];
          meta.mainProgram = "stapsteen";
        };

        # UEFI raw disk image for dd onto the appliance.
        image-raw = appliance.system.build.image;

        # The same disk as qcow2, for a VM.
        image-qcow2 = pkgs.runCommand "stapsteen-appliance.qcow2" { nativeBuildInputs = [ pkgs.qemu-utils ]; } ''
          qemu-img convert -f raw -O qcow2 ${appliance.system.build.image}/${appliance.image.filePath} $out
        '';
      };

      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.stapsteen.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      nixosConfigurations.appliance = nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.default
          ./image/appliance.nix
          ./image/site.nix
        ];
      };

      checks.${system}.vm = import ./nix/vm-test.nix {
        inherit pkgs;
        module = self.nixosModules.default;
      };
    };
}
