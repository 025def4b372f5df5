{
  description = "stapsteen: SSH bastion for hospital management networks, as a NixOS appliance";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      appliance = self.nixosConfigurations.appliance.config;
    in
    {
      packages.${system} = {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "stapsteen";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # The namespace tests need root and a network; the VM test covers them.
          cargoTestFlags = [ "--lib" ];
          meta.mainProgram = "stapsteen";
        };

        # UEFI raw disk image for dd onto the appliance.
        image-raw = appliance.system.build.image;

        # The same disk as qcow2, for a VM.
        image-qcow2 = pkgs.runCommand "stapsteen-appliance.qcow2" { nativeBuildInputs = [ pkgs.qemu ]; } ''
          qemu-img convert -f raw -O qcow2 ${appliance.system.build.image}/${appliance.image.repart.imageFile} $out
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
