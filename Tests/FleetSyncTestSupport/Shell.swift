import Foundation

/// Runs programs for tests, as the `postgres` OS user when this process is root.
public enum Shell {
    static var asPostgresPrefix: [String] { getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : [] }

    /// Runs `arguments` as the postgres user and throws with its output when it fails.
    public static func runAsPostgres(_ arguments: [String]) throws {
        _ = try run(asPostgresPrefix + arguments)
    }

    /// Runs a program to completion and returns its standard output; throws on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String]? = nil, input: String? = nil) throws -> String {
        let result = try runCapturing(arguments, environment: environment)
        guard result.status == 0 else {
            throw TestClusterError("\(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output)\n\(result.error)")
        }
        return result.output
    }

    /// Runs a program to completion and returns its exit status, standard output and standard error.
    /// Output goes through files, not pipes (a daemon started by the program, like pg_ctl's
    /// server, would keep a pipe open forever), and the child is reaped with `waitpid`, which
    /// does not depend on a run loop the way `Process.waitUntilExit` does.
    public static func runCapturing(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
        let base = NSTemporaryDirectory() + "fleetsync-shell-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: base + ".out")
            try? FileManager.default.removeItem(atPath: base + ".err")
        }
        let pid = try spawn(arguments, environment: environment, stdout: base + ".out", stderr: base + ".err")
        let status = wait(pid)
        let output = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
        let error = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
        return (status, output, error)
    }

    /// Starts a program with its output sent to files; returns its pid.
    public static func spawn(_ arguments: [String], environment: [String: String]? = nil, stdout: String = "/dev/null", stderr: String = "/dev/null") throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var argv = arguments.map { strdup($0) } + [nil]
        var envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, arguments[0], &actions, nil, &argv, &envp)
        guard result == 0 else { throw TestClusterError("cannot start \(arguments[0]): error \(result)") }
        return pid
    }

    /// Waits for `pid` and returns its exit status (128 + signal when killed).
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Starts a program that outlives nobody's wait: output discarded, never waited for.
    static func spawnDetached(_ arguments: [String]) throws {
        _ = try spawn(arguments)
    }
}
