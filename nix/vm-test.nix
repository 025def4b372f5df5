# Three nodes on two VLANs: admin (vlan 1), bastion (vlans 1 and 2), target (vlan 2).
# The admin reaches the target's sshd only through stapsteen, with a software
# security key; the session is recorded; the review console answers over HTTPS; the unit's
# exposure stays at or below 2.0.
{ pkgs, module }:
pkgs.testers.runNixOSTest {
  name = "stapsteen";

  nodes = {
    admin =
      { ... }:
      {
        imports = [ module ];
        virtualisation.vlans = [ 1 ];
        # The admin node runs only the test's software key agent from the package.
        services.stapsteen.enable = false;
        environment.systemPackages = [ pkgs.curl ];
      };

    bastion =
      { ... }:
      {
        imports = [ module ];
        virtualisation.vlans = [
          1
          2
        ];
        services.stapsteen = {
          enable = true;
          # Written by the test script once the keys exist (see below).
          policyFile = pkgs.writeText "bootstrap-policy.toml" "";
          listen = [ "192.168.1.2:22" ];
          adminNetworks = [ "192.168.1.0/24" ];
          managementNetworks = [ "192.168.2.0/24" ];
          settings.policy = "/run/stapsteen-test/policy.toml";
          console = {
            enable = true;
            listen = [ "192.168.1.2:8443" ];
            host = "bastion.test";
            reviewerNetworks = [ "192.168.1.0/24" ];
          };
        };
      };

    target =
      { ... }:
      {
        virtualisation.vlans = [ 2 ];
        services.openssh = {
          enable = true;
          extraConfig = "TrustedUserCAKeys /etc/ssh/stapsteen_ca.pub";
        };
      };
  };

  testScript = { nodes, ... }:
    let
      stapsteen = "${nodes.bastion.services.stapsteen.package}/bin/stapsteen";
    in
    ''
      start_all()
      bastion.wait_for_unit("stapsteen-keygen.service")
      target.wait_for_unit("sshd.service")
      # As tests/vm/run.sh checks on Debian: the keys came from the keygen unit, fingerprints in
      # its journal; nft is on the daemon's PATH despite the overrides.conf drop-in.
      bastion.succeed("journalctl -u stapsteen-keygen.service | grep -q 'host_key: SHA256:'")
      bastion.succeed("systemctl show -p Environment stapsteen.service | grep -q nftables")

      # The admin network routes the management network via the bastion, which must not forward.
      admin.succeed("ip route add 192.168.2.0/24 via 192.168.1.2")
      admin.fail("timeout 5 bash -c 'exec 3<>/dev/tcp/192.168.2.3/22'")

      # The target trusts the bastion's CA.
      ca_pub = bastion.succeed("cat /var/lib/stapsteen-keys/ca_key.pub").strip()
      target.succeed(f"echo '{ca_pub}' > /etc/ssh/stapsteen_ca.pub && systemctl restart sshd")
      host_key = target.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").strip()
      host_key = " ".join(host_key.split()[:2])

      # A software security key for alice on the admin node.
      admin.succeed("systemd-run --unit agent ${stapsteen} softkey-agent --socket /tmp/agent.sock --key /tmp/alice")
      admin.wait_for_file("/tmp/alice.sk.pub")
      alice = " ".join(admin.succeed("cat /tmp/alice.sk.pub").split()[:2])

      policy = f"""
      [[admin]]
      name = "alice"
      keys = ["{alice}"]

      [[target]]
      name = "target"
      address = "192.168.2.3"
      host_keys = ["{host_key}"]
      accounts = ["root"]

      [[grant]]
      name = "test"
      admins = ["alice"]
      targets = ["target"]
      accounts = ["root"]

      [[reviewer]]
      name = "c.visser"
      """
      bastion.succeed(f"mkdir -p /run/stapsteen-test && cat > /run/stapsteen-test/policy.toml <<'EOF'\n{policy}\nEOF")
      bastion.succeed("chmod 0755 /run/stapsteen-test && chmod 0644 /run/stapsteen-test/policy.toml")
      bastion.succeed("systemctl restart stapsteen.service")
      bastion.wait_for_open_port(22, "192.168.1.2")

      bastion_key = bastion.succeed("cat /var/lib/stapsteen-keys/host_key.pub").strip()
      admin.succeed(f"echo '192.168.1.2 {bastion_key}' > /tmp/known_hosts")
      ssh = "ssh -o IdentityAgent=/tmp/agent.sock -o UserKnownHostsFile=/tmp/known_hosts -o BatchMode=yes"
      out = admin.succeed(f"{ssh} -tt alice@192.168.1.2 target 'echo through-the-bastion; exit'")
      assert "through-the-bastion" in out, out

      # The session was recorded.
      listed = bastion.succeed("${stapsteen} recordings list --config /etc/stapsteen/stapsteen.toml")
      assert "alice" in listed and "target" in listed, listed
      # ...and sealed into the signed audit chain.
      bastion.succeed("${stapsteen} recordings verify --all --config /etc/stapsteen/stapsteen.toml")
      bastion.succeed("${stapsteen} audit verify --config /etc/stapsteen/stapsteen.toml")

      # The review console answers over HTTPS, and an enrolment code written as root stays
      # readable by the service's dynamic user.
      bastion.wait_for_open_port(8443, "192.168.1.2")
      admin.succeed("curl -sfk --resolve bastion.test:8443:192.168.1.2 https://bastion.test:8443/login")
      bastion.succeed("${stapsteen} console enrol --config /etc/stapsteen/stapsteen.toml c.visser")
      owner = bastion.succeed("stat -c %U /var/lib/private/stapsteen/console/enrolment.json").strip()
      assert owner != "root", owner

      # The kernel table is in place and the unit's exposure is at most 2.0.
      bastion.succeed("nft list table inet stapsteen")
      bastion.succeed("systemd-analyze security --threshold=20 stapsteen.service")

      # A crash: systemd restarts the daemon, the audit chain still verifies, sessions work.
      bastion.succeed("systemctl kill -s KILL stapsteen.service")
      bastion.wait_until_succeeds("test $(systemctl show -p NRestarts --value stapsteen.service) -ge 1")
      bastion.wait_for_open_port(22, "192.168.1.2")
      bastion.succeed("${stapsteen} audit verify --config /etc/stapsteen/stapsteen.toml")
      out = admin.succeed(f"{ssh} -tt alice@192.168.1.2 target 'echo after-the-crash; exit'")
      assert "after-the-crash" in out, out
    '';
}
