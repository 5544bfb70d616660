import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import Foundation
import XCTest

/// Issue 16: two `fleetsync serve` replicas of one shore behind Caddy (examples/Caddyfile): a
/// vessel whose requests alternate between them, while one replica is killed and restarted,
/// converges, with nothing lost or applied twice.
final class ReplicasBehindBalancerTests: DatabaseTestCase {
    func testAVesselConvergesThroughTwoReplicasWhileOneIsKilledAndRestarted() async throws {
        let caddy = "/usr/bin/caddy"
        guard FileManager.default.isExecutableFile(atPath: caddy) else {
            throw XCTSkip("caddy is not installed (scripts/install-deps.sh installs it)")
        }
        let fleet = try await Fleet.make(vessels: ["aurora"])
        let (first, second, balancer) = (fleet.httpPort, try FreePort.find(), try FreePort.find())
        var replicaA: FleetSyncProcess? = try fleet.serve()
        let replicaB = try fleet.serve(port: second)
        defer { replicaA?.stop(); replicaB.stop() }

        // The example Caddyfile, on this test's ports.
        let home = NSTemporaryDirectory() + "fleetsync-caddy-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let example = try String(contentsOf: Fixtures.repositoryRoot.appendingPathComponent("examples/Caddyfile"), encoding: .utf8)
        let caddyfile = example.replacingOccurrences(of: ":8080", with: ":\(balancer)")
            .replacingOccurrences(of: "127.0.0.1:8081", with: "127.0.0.1:\(first)")
            .replacingOccurrences(of: "127.0.0.1:8082", with: "127.0.0.1:\(second)")
        try caddyfile.write(toFile: home + "/Caddyfile", atomically: true, encoding: .utf8)
        let proxy = try Shell.spawn([caddy, "run", "--config", home + "/Caddyfile", "--adapter", "caddyfile"],
                                    environment: ["HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home, "PATH": "/usr/bin:/bin"],
                                    stdout: home + "/caddy.log", stderr: home + "/caddy.log")
        defer { kill(proxy, SIGTERM); _ = Shell.wait(proxy) }
        let deadline = Date().addingTimeInterval(20)
        while (try? Shell.runCapturing(["/usr/bin/curl", "-s", "-m", "1", "http://127.0.0.1:\(balancer)/health"]).output) != "ok" {
            guard Date() < deadline else { throw TestClusterError("caddy did not start: " + ((try? String(contentsOfFile: home + "/caddy.log", encoding: .utf8)) ?? "")) }
            usleep(200_000)
        }

        // The vessel talks to the balancer only.
        let aurora = fleet.vessels[0]
        let viaBalancer = try FleetSyncBinary.writeConfiguration(
            try String(contentsOfFile: aurora.configPath, encoding: .utf8).replacingOccurrences(of: "127.0.0.1:\(first)", with: "127.0.0.1:\(balancer)"))
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A');
            CREATE TABLE relay_audit (row_id uuid);
            CREATE FUNCTION audit_relay() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.op = 'R' THEN INSERT INTO relay_audit VALUES (NEW.row_id); END IF; RETURN NULL; END $$;
            CREATE TRIGGER audit AFTER INSERT ON fleetsync.outbox FOR EACH ROW EXECUTE FUNCTION audit_relay();
            """, url: fleet.shore.url)
        XCTAssertEqual(try FleetSyncBinary.run(["sync", "--config", viaBalancer]).status, 0)
        for round in 0..<12 {
            try Fixtures.runScript("INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'crew \(round)');", url: aurora.url)
            try Fixtures.runScript("INSERT INTO certificate_type (code, title) VALUES ('T\(round)', 't');", url: fleet.shore.url)
            if round == 3 { replicaA?.stop(signal: SIGKILL); replicaA = nil }
            if round == 8 { replicaA = try fleet.serve() }
            // Each sync takes two or three requests, which the balancer spreads over the replicas.
            let result = try FleetSyncBinary.run(["sync", "--config", viaBalancer])
            XCTAssertEqual(result.status, 0, "round \(round): " + result.output + result.error)
        }
        let shore = try await connect(fleet.shore.url)
        let vessel = try await connect(aurora.url)
        let crew: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer")
        XCTAssertEqual(crew, 12, "nothing lost")
        let relayed: Int64 = try await shore.scalar("SELECT count(*) FROM relay_audit")
        XCTAssertEqual(relayed, 12, "each vessel change applied exactly once")
        let types: Int64 = try await vessel.scalar("SELECT count(*) FROM certificate_type")
        XCTAssertEqual(types, 12)
        let pending: Int64 = try await vessel.scalar("SELECT (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log) + (SELECT count(*) FROM fleetsync.dead_letter)")
        XCTAssertEqual(pending, 0)
    }
}
