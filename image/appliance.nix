# The stapsteen appliance: an image-based NixOS system that runs the bastion and
# nothing an attacker could use to change it. Site specifics (addresses, policy)
# live in site.nix. What this hardens, and what is left to the operator, is in
# image/README.md.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  efiArch = pkgs.stdenv.hostPlatform.efiArch;
in
{
  imports = [
    # No Nix, no rebuilding in place, static users, minimal profile.
    "${modulesPath}/profiles/image-based-appliance.nix"
    # No Perl in the system closure (checked at build time).
    "${modulesPath}/profiles/perlless.nix"
    "${modulesPath}/image/repart.nix"
  ];

  system.stateVersion = "25.11";

  # --- disk: ESP (UKI), system (the store is mounted read-only), persistent state ---------------------------
  boot.loader.grub.enable = false;
  fileSystems."/" = {
    device = "/dev/disk/by-partlabel/root";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-partlabel/ESP";
    fsType = "vfat";
    options = [ "ro" "umask=0077" ];
  };
  # Recordings, keys and the journal survive updates of the system partition.
  fileSystems."/var" = {
    device = "/dev/disk/by-partlabel/state";
    fsType = "ext4";
    options = [ "nosuid" "nodev" "noexec" ];
  };
  boot.tmp.useTmpfs = true;

  image.repart = {
    name = "stapsteen-appliance";
    partitions = {
      "10-esp" = {
        contents = {
          "/EFI/BOOT/BOOT${lib.toUpper efiArch}.EFI".source =
            "${pkgs.systemd}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
          "/EFI/Linux/stapsteen.efi".source = "${config.system.build.uki}/${config.system.boot.loader.ukiFile}";
        };
        repartConfig = {
          Type = "esp";
          Format = "vfat";
          Label = "ESP";
          SizeMinBytes = "256M";
        };
      };
      "20-root" = {
        storePaths = [ config.system.build.toplevel ];
        repartConfig = {
          Type = "root";
          Format = "ext4";
          Label = "root";
          Minimize = "guess";
        };
      };
      "30-state" = {
        repartConfig = {
          Type = "var";
          Format = "ext4";
          Label = "state";
          SizeMinBytes = "4G";
        };
      };
    };
  };

  # --- no way in but the bastion itself ------------------------------------
  services.openssh.enable = false;
  security.sudo.enable = false;
  users.users.root.hashedPassword = "!";
  console.enable = false;
  systemd.services."getty@".enable = false;
  systemd.services."autovt@".enable = false;
  systemd.enableEmergencyMode = false;
  boot.initrd.systemd.emergencyAccess = false;

  # --- kernel ---------------------------------------------------------------
  # The nft modules are loaded at boot (services.stapsteen adds them to
  # boot.kernelModules); after that no module can be loaded.
  security.lockKernelModules = true;
  security.protectKernelImage = true;
  boot.kernel.sysctl = {
    "net.ipv4.ip_forward" = 0;
    "net.ipv6.conf.all.forwarding" = 0;
    "kernel.dmesg_restrict" = 1;
    "kernel.kptr_restrict" = 2;
  };

  # --- clock and logs ---------------------------------------------------------
  # Grant windows depend on the clock.
  services.timesyncd.enable = true;
  services.journald.storage = "persistent";
}
