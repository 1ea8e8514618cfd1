# NixOS VM test of the machnet module: a host with a declarative container whose
# routes come from services.machnet. Needs KVM, and nixpkgs on NIX_PATH (or pass pkgs):
#
#   nix-build nixos/test.nix                     # run it
#   nix-build nixos/test.nix -A driverInteractive && ./result/bin/nixos-test-driver
#
# From Nix code: import ./nixos/test.nix { inherit pkgs; }
{ pkgs ? import <nixpkgs> { } }:

pkgs.testers.runNixOSTest {
  name = "machnet";

  nodes.host = { ... }: {
    imports = [ ./module.nix ];

    containers.web = {
      autoStart = true;
      privateNetwork = true;
      hostAddress = "10.231.0.1";
      localAddress = "10.231.0.2";
      config = { };
    };

    services.machnet = {
      enable = true;
      machines.web.routes = [
        {
          destination = "10.99.0.0/16";
          gateway = "10.231.0.1";
          dev = "eth0";
          metric = 100;
        }
        {
          destination = "198.51.100.0/24";
          type = "blackhole";
        }
      ];
    };
  };

  # Inside the container `ip` has no name for protocol 109 (the container's /etc
  # lacks rt_protos.d/machnet.conf), so it may print either.
  testScript = ''
    DECLARED = [
        r"^10\.99\.0\.0/16 via 10\.231\.0\.1 dev eth0 proto (machnet|109) metric 100( |$)",
        r"^blackhole 198\.51\.100\.0/24 proto (machnet|109)( |$)",
    ]
    CHECK = "machnet apply --check --machine web /etc/machnet/web.json"


    def in_web(pattern):
        return f"nixos-container run web -- ip route show | grep -E '{pattern}'"


    def wait_for_routes():
        host.wait_for_unit("container@web.service")
        host.wait_for_unit("machnet-routes-web.service")
        for pattern in DECLARED:
            host.wait_until_succeeds(in_web(pattern), timeout=60)


    start_all()

    with subtest("the declared routes are applied when the container starts"):
        wait_for_routes()
        host.succeed(CHECK)

    with subtest("the host's ip names protocol 109 machnet"):
        leader = host.succeed("machinectl show web --property=Leader --value").strip()
        host.succeed(
            f"nsenter --net=/proc/{leader}/ns/net ip route show proto machnet"
            " | grep -F '10.99.0.0/16 via 10.231.0.1'"
        )

    with subtest("the routes come back when the container restarts"):
        host.succeed("systemctl restart container@web.service")
        wait_for_routes()
        host.succeed(CHECK)

    with subtest("a route deleted by hand comes back when the unit restarts"):
        host.succeed("nixos-container run web -- ip route del 10.99.0.0/16")
        host.fail(in_web(DECLARED[0]))
        host.fail(CHECK)
        host.succeed("systemctl restart machnet-routes-web.service")
        wait_for_routes()
        host.succeed(CHECK)
  '';
}
