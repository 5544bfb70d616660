import Foundation
import FleetSyncPostgres
import Logging

/// A throwaway PostgreSQL 15 cluster for tests: `initdb` in a temporary directory, started on a
/// free loopback port as the `postgres` OS user (PostgreSQL refuses to run as root), shared by
/// every test of one run and stopped when the run ends, however it ends.
public final class TestCluster: @unchecked Sendable {
    public let directory: String
    public let port: Int
    private let lock = NSLock()
    private var stopped = false

    private static let sharedLock = NSLock()
    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var sharedCluster: TestCluster?
    nonisolated(unsafe) private static var all: [TestCluster] = []

    /// The cluster shared by this test run, started on first use.
    public static func shared() throws -> TestCluster {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        if let cluster = sharedCluster { return cluster }
        let cluster = try TestCluster.start()
        sharedCluster = cluster
        return cluster
    }

    /// Starts a new cluster of its own (for tests that need several nodes).
    public static func start() throws -> TestCluster {
        let binaries = try PostgresBinaries.locate()
        let directory = try Self.makeDirectory()
        let port = try FreePort.find()
        let cluster = TestCluster(directory: directory, port: port)
        try cluster.initialize(binaries)
        registryLock.lock()
        if all.isEmpty { atexit { TestCluster.stopAll() } }
        all.append(cluster)
        registryLock.unlock()
        return cluster
    }

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    private static func makeDirectory() throws -> String {
        var template = Array("/tmp/fleetsync-pg-XXXXXX".utf8CString)
        guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TestClusterError("cannot create a temporary directory")
        }
        let directory = String(cString: path)
        chmod(directory, 0o777)
        return directory
    }

    private func initialize(_ binaries: PostgresBinaries) throws {
        let data = directory + "/data"
        try Shell.runAsPostgres([binaries.initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        let options = Self.serverOptions(port: port, directory: directory)
        try Shell.runAsPostgres([binaries.pgCtl, "-D", data, "-o", options, "-l", directory + "/server.log", "-w", "-t", "60", "start"])
        // A watchdog stops the cluster if this process dies without running its exit handlers.
        let watchdog = """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
            \(Shell.asPostgresPrefix.joined(separator: " ")) \(binaries.pgCtl) -D \(data) -m immediate stop >/dev/null 2>&1
            rm -rf \(directory)
            """
        try Shell.spawnDetached(["/bin/sh", "-c", watchdog])
    }

    /// The URL of database `name` in this cluster.
    public func url(database: String) -> String { "postgres://postgres@127.0.0.1:\(port)/\(database)" }

    /// Creates a new empty database and returns its URL.
    public func createDatabase(prefix: String = "t") async throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let session = try await DatabaseSession.connect(url: url(database: "postgres"), logger: Logger(label: "test"))
        do {
            try await session.execute("CREATE DATABASE \(SQL.identifier(name))")
        } catch {
            await session.close()
            throw error
        }
        await session.close()
        return url(database: name)
    }

    /// Stops the server (`fast` or `immediate`), keeping its files, without waiting for it.
    public func pause(mode: String = "fast") throws {
        let binaries = try PostgresBinaries.locate()
        try Shell.runAsPostgres([binaries.pgCtl, "-D", directory + "/data", "-m", mode, "-W", "stop"])
    }

    /// Starts a paused server again, with the options it first started with.
    public func resume() throws {
        let binaries = try PostgresBinaries.locate()
        let data = directory + "/data"
        // A paused server may still be shutting down; pg_ctl start waits for nothing else.
        let deadline = Date().addingTimeInterval(30)
        while FileManager.default.fileExists(atPath: data + "/postmaster.pid") && Date() < deadline { usleep(100_000) }
        try Shell.runAsPostgres([binaries.pgCtl, "-D", data, "-o", Self.serverOptions(port: port, directory: directory), "-l", directory + "/server.log", "-w", "-t", "60", "start"])
    }

    static func serverOptions(port: Int, directory: String) -> String {
        [
            "-p \(port)", "-k \(directory)", "-c listen_addresses=127.0.0.1", "-c fsync=off",
            "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=300",
            "-c shared_buffers=64MB",
        ].joined(separator: " ")
    }

    /// Stops the cluster and removes its files.
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        if let binaries = try? PostgresBinaries.locate() {
            try? Shell.runAsPostgres([binaries.pgCtl, "-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func stopAll() {
        registryLock.lock()
        let clusters = all
        registryLock.unlock()
        for cluster in clusters { cluster.stop() }
    }
}

public struct TestClusterError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where Debian's PostgreSQL 15 server programs live.
public struct PostgresBinaries: Sendable {
    public var directory: String
    public var initdb: String { directory + "/initdb" }
    public var pgCtl: String { directory + "/pg_ctl" }
    public var pgbench: String { directory + "/pgbench" }
    public var psql: String { directory + "/psql" }

    public static func locate() throws -> PostgresBinaries {
        let candidates = [ProcessInfo.processInfo.environment["PG_BINDIR"], "/usr/lib/postgresql/15/bin"].compactMap { $0 }
        for directory in candidates where FileManager.default.isExecutableFile(atPath: directory + "/initdb") {
            return PostgresBinaries(directory: directory)
        }
        throw TestClusterError("PostgreSQL 15 server programs not found in \(candidates); run: apt-get install -y postgresql")
    }
}

/// A free TCP port on 127.0.0.1, found by binding port 0.
public enum FreePort {
    public static func find() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestClusterError("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw TestClusterError("cannot bind a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
