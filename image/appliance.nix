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

  # --- disk: ESP (UKI) and system in the image; the state partition is made on the device ------
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
  # Recordings, keys and the journal: on a partition that no image contains, so writing a new
  # image (or only its ESP and root partitions, see image/README.md) never replaces them.
  fileSystems."/var" = {
    device = "/dev/disk/by-partlabel/state";
    fsType = "ext4";
    options = [ "nosuid" "nodev" "noexec" ];
  };
  boot.tmp.useTmpfs = true;

  image.repart = {
    name = "stapsteen-appliance";
    # Besides the whole disk, one file per partition with SplitName: what an update writes.
    split = true;
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
          SplitName = "esp";
        };
      };
      "20-root" = {
        storePaths = [ config.system.build.toplevel ];
        repartConfig = {
          Type = "root";
          Format = "ext4";
          Label = "root";
          # A fixed size, so that a later, larger system still fits the partition on the device
          # (the closure is a few hundred MiB; Minimize would leave no headroom).
          SizeMinBytes = "2G";
          SizeMaxBytes = "2G";
          SplitName = "root";
        };
      };
    };
  };

  # First boot: systemd-repart in the initrd adds the state partition in the free space after
  # root and formats it; on later boots it finds it and leaves it alone. linux-generic, not the
  # "var" type, which ties the partition UUID to the machine ID for automatic discovery; this
  # image mounts it by label instead (fileSystems."/var" above).
  boot.initrd.systemd.repart.enable = true;
  systemd.repart.partitions."30-state" = {
    Type = "linux-generic";
    Format = "ext4";
    Label = "state";
    SizeMinBytes = "4G";
  };

  # Storage classes: the journal and the recordings on partitions of their own, so that a flood
  # of recordings (or of log lines) never takes the space the audit chain, on `state`, needs.
  # Recordings take most of the disk (Weight). Priority 1: on an appliance whose `state` already
  # took the whole disk, repart drops these instead of failing, and everything stays on `state`
  # (the mounts are nofail; the daemon's min_free_bytes still keeps the chain's space there).
  systemd.repart.partitions."40-journal" = {
    Type = "linux-generic";
    Format = "ext4";
    Label = "journal";
    SizeMinBytes = "1G";
    SizeMaxBytes = "4G";
    Priority = "1";
  };
  systemd.repart.partitions."50-recordings" = {
    Type = "linux-generic";
    Format = "ext4";
    Label = "recordings";
    SizeMinBytes = "4G";
    Weight = "8000";
    Priority = "1";
  };
  fileSystems."/var/log/journal" = {
    device = "/dev/disk/by-partlabel/journal";
    fsType = "ext4";
    options = [ "nosuid" "nodev" "noexec" "nofail" ];
  };
  # state_dir/recordings of the daemon's DynamicUser state directory.
  fileSystems."/var/lib/private/stapsteen/recordings" = {
    device = "/dev/disk/by-partlabel/recordings";
    fsType = "ext4";
    options = [ "nosuid" "nodev" "noexec" "nofail" ];
  };
  # A nofail mount is not waited for by local-fs.target: the daemon waits for it itself.
  systemd.services.stapsteen.after = [ "var-lib-private-stapsteen-recordings.mount" ];
  # The mounted file system's root belongs to root; the daemon's dynamic user must own it. "+"
  # runs this with full privileges, after systemd has set up the state directory.
  systemd.services.stapsteen.serviceConfig.ExecStartPre = [
    "+${pkgs.writeShellScript "stapsteen-recordings-owner" ''
      set -eu
      d=/var/lib/private/stapsteen/recordings
      ${pkgs.coreutils}/bin/mkdir -p "$d"
      ${pkgs.coreutils}/bin/chown --reference=/var/lib/private/stapsteen "$d"
      ${pkgs.coreutils}/bin/chmod 0700 "$d"
    ''}"
  ];
  # Making the mount point creates /var/lib/private 0755; systemd wants it 0700.
  systemd.tmpfiles.rules = [ "d /var/lib/private 0700 root root -" ];

  # --- no way in but the bastion itself ------------------------------------
  services.openssh.enable = false;
  security.sudo.enable = false;
  # No account can log in, by design: root is locked and there is no other user. NixOS asserts
  # against that with immutable users (nixos/modules/config/users-groups.nix) unless told so.
  users.users.root.hashedPassword = "!";
  users.allowNoPasswordLogin = true;
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
    # Static addresses and routes: no router advertisements or redirects (the daemon's table
    # drops them too).
    "net.ipv6.conf.all.accept_ra" = 0;
    "net.ipv6.conf.default.accept_ra" = 0;
    "net.ipv4.conf.all.accept_redirects" = 0;
    "net.ipv4.conf.default.accept_redirects" = 0;
    "net.ipv6.conf.all.accept_redirects" = 0;
    "net.ipv6.conf.default.accept_redirects" = 0;
  };

  # --- network: only what site.nix configures ---------------------------------------------
  # No DHCP on unconfigured ports (NixOS would add 99-ethernet-default-dhcp otherwise).
  networking.useDHCP = false;
  # The host firewall on nftables, replacing only its own tables on reload, so it never
  # deletes stapsteen's table `inet stapsteen`.
  networking.nftables.enable = true;
  networking.nftables.flushRuleset = false;

  # --- clock and logs ---------------------------------------------------------
  # Grant windows depend on the clock.
  services.timesyncd.enable = true;
  services.journald.storage = "persistent";
}
