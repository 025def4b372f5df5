# services.stapsteen: the bastion daemon as a NixOS service.
#
# The units are the hardened files next to this module (stapsteen.service,
# stapsteen-keygen.service), installed through systemd.packages with their
# program paths replaced, so what runs is what `systemd-analyze security`
# checks in CI. Host, CA and audit signing keys are generated on first boot into
# /var/lib/stapsteen-keys and reach the daemon as systemd credentials; they
# never enter the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.stapsteen;
  toml = pkgs.formats.toml { };

  configFile = toml.generate "stapsteen.toml" cfg.settings;

  units = pkgs.runCommand "stapsteen-units" { } ''
    mkdir -p $out/lib/systemd/system
    for unit in stapsteen.service stapsteen-keygen.service; do
      substitute ${./.}/$unit $out/lib/systemd/system/$unit \
        --replace-fail /usr/bin/stapsteen ${lib.getExe cfg.package}
    done
    substituteInPlace $out/lib/systemd/system/stapsteen.service \
      --replace-fail /bin/kill ${pkgs.coreutils}/bin/kill \
      --replace-fail "Environment=PATH=/usr/sbin:/usr/bin:/sbin:/bin" \
        "Environment=PATH=${lib.makeBinPath [ pkgs.nftables ]}"
  '';
in
{
  options.services.stapsteen = {
    enable = lib.mkEnableOption "the stapsteen SSH bastion";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The stapsteen package (the flake sets its own build as the default).";
    };

    policyFile = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./policies/hospital.toml";
      description = ''
        The policy (admins, targets, grants). It is checked at build time with
        `stapsteen check` and installed as /etc/stapsteen/policy.toml.
      '';
    };

    listen = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "0.0.0.0:22" ];
      example = [ "10.10.0.5:22" ];
      description = "Addresses (address:port) of the SSH front door.";
    };

    adminNetworks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      example = [ "10.10.0.0/24" ];
      description = "Networks from which admins may reach the front door; the kernel drops the rest.";
    };

    managementNetworks = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      example = [ "10.20.0.0/24" ];
      description = "Networks reachable only along policy grants. Every target must lie in one.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Open the front door's ports in the NixOS firewall too (stapsteen's own
        table `inet stapsteen` still limits them to the admin networks).
      '';
    };

    logForwarding = {
      url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "https://siem.example.org:19532";
        description = ''
          When set, systemd-journal-upload sends the journal (with every audit
          event) to this systemd-journal-remote compatible collector.
        '';
      };
      clientKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "Client key (PEM) for the collector, readable by group systemd-journal.";
      };
      clientCertificateFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "Client certificate (PEM) for the collector.";
      };
      trustedCertificateFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "CA certificate that the collector's certificate must chain to.";
      };
    };

    offsiteSecretFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/var/lib/stapsteen-keys/offsite_secret";
      description = ''
        File (outside the store) with the secret access key of the off-site
        object store; it reaches the daemon as the credential `offsite_secret`.
        Set the rest of `[offsite]` (endpoint, bucket, region, prefix,
        access_key_id) in `settings.offsite`.
      '';
    };

    console = {
      enable = lib.mkEnableOption "the HTTPS review console for security reviewers";
      listen = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ "0.0.0.0:8443" ];
        example = [ "10.30.0.5:443" ];
        description = "Addresses (address:port) of the review console.";
      };
      host = lib.mkOption {
        type = lib.types.str;
        example = "stapsteen.ziekenhuis.local";
        description = ''
          The DNS name reviewers use in the URL; WebAuthn keys are bound to it.
        '';
      };
      reviewerNetworks = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        example = [ "10.30.0.0/24" ];
        description = "Networks from which reviewers may reach the console; the kernel drops the rest.";
      };
      certificateFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = ''
          PEM certificate chain for the console. Without it (and keyFile) a
          self-signed certificate is made on first start; its fingerprint is
          in the CONSOLE_START audit event.
        '';
      };
      keyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "PEM key (outside the store); it reaches the daemon as the credential `console_key`.";
      };
    };

    settings = lib.mkOption {
      type = lib.types.submodule { freeformType = toml.type; };
      default = { };
      description = ''
        The daemon's configuration file (see the README). The options above fill
        `listen`, `policy`, `state_dir`, the key paths and `[firewall]`; set
        `limits` and anything else here.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.stapsteen.settings = {
      listen = cfg.listen;
      policy = lib.mkDefault "/etc/stapsteen/policy.toml";
      # The unit's StateDirectory (DynamicUser keeps it under /var/lib/private).
      state_dir = "/var/lib/stapsteen";
      # Paths the credentials would come from without systemd; the unit's
      # LoadCredential= makes $CREDENTIALS_DIRECTORY win.
      host_key = "/var/lib/stapsteen-keys/host_key";
      ca_key = "/var/lib/stapsteen-keys/ca_key";
      signing_key = "/var/lib/stapsteen-keys/signing_key";
      audit = lib.mkDefault "journald";
      firewall = {
        enabled = true;
        admin_networks = cfg.adminNetworks;
        management_networks = cfg.managementNetworks;
      }
      // lib.optionalAttrs cfg.console.enable {
        reviewer_networks = cfg.console.reviewerNetworks;
      };
      console = lib.mkIf cfg.console.enable (
        {
          inherit (cfg.console) listen host;
        }
        // lib.optionalAttrs (cfg.console.certificateFile != null) {
          cert = cfg.console.certificateFile;
          key = cfg.console.keyFile;
        }
      );
    };

    environment.etc."stapsteen/stapsteen.toml".source = configFile;
    environment.etc."stapsteen/policy.toml".source =
      pkgs.runCommand "stapsteen-policy.toml"
        {
          nativeBuildInputs = [ cfg.package ];
        }
        ''
          cp ${cfg.policyFile} $out
          # The policy must parse and validate before it can become part of a system.
          stapsteen check --policy $out
        '';

    systemd.packages = [ units ];
    assertions = [
      {
        assertion = (cfg.console.certificateFile == null) == (cfg.console.keyFile == null);
        message = "services.stapsteen.console: certificateFile and keyFile go together";
      }
      {
        assertion = (cfg.settings ? offsite) == (cfg.offsiteSecretFile != null);
        message = "services.stapsteen: settings.offsite and offsiteSecretFile go together";
      }
    ];
    services.stapsteen.settings.offsite = lib.mkIf (cfg.offsiteSecretFile != null) {
      secret_access_key_file = cfg.offsiteSecretFile;
    };

    systemd.services.stapsteen = {
      wantedBy = [ "multi-user.target" ];
      # The unit comes from systemd.packages, and setting this attribute set makes NixOS write
      # an overrides.conf drop-in whose Environment=PATH (the default path: coreutils, findutils,
      # grep, sed, systemd) replaces the unit's own; the daemon runs `nft` from PATH, so it goes
      # into that path here (nixos/lib/systemd-lib.nix, serviceConfig and stage2ServiceConfig).
      path = [ pkgs.nftables ];
      # A host firewall that loads at boot must not replace the table after the daemon did.
      after = [
        "nftables.service"
        "firewall.service"
      ];
      serviceConfig.LoadCredential =
        lib.optional (cfg.offsiteSecretFile != null) "offsite_secret:${cfg.offsiteSecretFile}"
        ++ lib.optional (cfg.console.keyFile != null) "console_key:${cfg.console.keyFile}";
      restartTriggers = [
        configFile
        cfg.policyFile
      ];
    };
    systemd.services.stapsteen-keygen.wantedBy = [ "multi-user.target" ];

    # nft needs these, and module loading may be locked after boot.
    boot.kernelModules = [
      "nf_tables"
      "nft_ct"
      "nft_limit"
      "nft_log"
      "nf_log_syslog"
      "nf_conntrack"
    ];

    # The daemon needs only the nft tool (above) and the kernel modules; whether the host's own
    # firewall runs on nftables is the host's choice. One that flushes the whole ruleset on reload
    # also deletes `inet stapsteen`: the daemon puts it back within 2 s (FIREWALL_DRIFT) and starts
    # no session meanwhile, but say so.
    warnings =
      lib.optional (config.networking.nftables.enable && config.networking.nftables.flushRuleset)
        "services.stapsteen: networking.nftables.flushRuleset deletes the table inet stapsteen at every firewall reload (it is restored within 2 s); set networking.nftables.flushRuleset = false.";
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall (
      map (a: lib.toInt (lib.last (lib.splitString ":" a))) (
        cfg.listen ++ lib.optionals cfg.console.enable cfg.console.listen
      )
    );

    services.journald.upload = lib.mkIf (cfg.logForwarding.url != null) {
      enable = true;
      settings.Upload = {
        URL = cfg.logForwarding.url;
        ServerKeyFile = cfg.logForwarding.clientKeyFile;
        ServerCertificateFile = cfg.logForwarding.clientCertificateFile;
        TrustedCertificateFile = cfg.logForwarding.trustedCertificateFile;
      };
    };
  };
}
