# One site's settings: edit this file (or replace it) for your network and policy.
{ ... }:
{
  networking.hostName = "stapsteen";

  # The appliance has a leg in the admin network, one in the management network and one in
  # the security team's review network. Interfaces are matched by MAC address (replace these
  # with the machine's; or use matchConfig.Path, e.g. "pci-0000:01:00.0"), not by name: kernel
  # names are not stable, and an unmatched port stays unconfigured (no DHCP fallback:
  # networking.useDHCP = false in appliance.nix).
  systemd.network.networks =
    let
      static = mac: addresses: {
        matchConfig.MACAddress = mac;
        address = addresses;
        networkConfig = {
          DHCP = "no";
          IPv6AcceptRA = false;
        };
        linkConfig.RequiredForOnline = "routable";
      };
    in
    {
      "10-admin" = static "52:54:00:0a:00:01" [ "10.10.0.5/24" ];
      "20-management" = static "52:54:00:14:00:01" [ "10.20.0.1/24" ];
      "30-review" = static "52:54:00:1e:00:01" [ "10.30.0.5/24" ];
    };
  services.timesyncd.servers = [ "10.10.0.1" ];

  services.stapsteen = {
    enable = true;
    policyFile = ../policies/example-hospital.toml;
    listen = [ "10.10.0.5:22" ];
    adminNetworks = [ "10.10.0.0/24" ];
    managementNetworks = [ "10.20.0.0/24" "2001:db8:20::/64" ];
    # The review console, for the CISO office's network.
    console = {
      enable = true;
      listen = [ "10.30.0.5:443" ];
      host = "stapsteen.ziekenhuis.local";
      reviewerNetworks = [ "10.30.0.0/24" ];
    };
    # logForwarding.url = "https://siem.example.org:19532";
  };
}
