package imgclf.mms;

import com.amazonaws.ml.mms.ModelServer;
import com.amazonaws.ml.mms.archive.ModelArchive;
import com.amazonaws.ml.mms.metrics.MetricManager;
import com.amazonaws.ml.mms.servingsdk.impl.PluginsManager;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.ConnectorType;
import com.amazonaws.ml.mms.util.Connector;
import com.amazonaws.ml.mms.util.ServerGroups;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkerState;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import com.amazonaws.ml.mms.ServerInitializer;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.FixedRecvByteBufAllocator;
import io.netty.handler.ssl.SslContext;
import io.netty.util.internal.logging.InternalLoggerFactory;
import io.netty.util.internal.logging.Slf4JLoggerFactory;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.List;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.DefaultParser;

/**
 * MMS's ModelServer, started so that its HTTP port opens only once the model can answer.
 *
 * <p>Stock MMS binds the port first and loads workers asynchronously, and its /ping answers 200 for workers that
 * are still loading (or crash-looping). Here the startup model is registered (with the micro-batch settings,
 * which stock MMS cannot give a startup model), its workers are started, and the inference/management ports are
 * bound only when a worker reports WORKER_MODEL_LOADED. Until then nothing listens: a health check fails to
 * connect, which every caller (SageMaker, load balancers, tests) reads as "not healthy yet".
 *
 * <p>System properties (set by `imgclf serve`): imgclf.model (name=dir; absent for multi-model endpoints),
 * imgclf.handler, imgclf.workers, imgclf.batch_size, imgclf.max_batch_delay_ms;
 * imgclf.startup_timeout_s (give up, exit 3, when no worker has loaded the model by then: SageMaker then reports a
 * failed endpoint instead of waiting on a server that never opens its port);
 * imgclf.management ("false": the management API is not bound at all; single-model endpoints need none);
 * imgclf.models_root (multi-model: POST /models may only register a local directory under this root, see
 * ModelUrlGuard).
 */
public final class GatedModelServer {

    private GatedModelServer() {}

    public static void main(String[] args) throws Exception {
        CommandLine cmd =
                new DefaultParser().parse(ConfigManager.Arguments.getOptions(), args, null, false);
        ConfigManager.init(new ConfigManager.Arguments(cmd));
        ConfigManager configManager = ConfigManager.getInstance();
        PluginsManager.getInstance().initialize();
        InternalLoggerFactory.setDefaultFactory(Slf4JLoggerFactory.INSTANCE);
        ModelServer server = new ModelServer(configManager);
        ServerGroups groups = (ServerGroups) field(server, "serverGroups");
        try {
            configManager.validateConfigurations();
            Method initModelStore = ModelServer.class.getDeclaredMethod("initModelStore");
            initModelStore.setAccessible(true);
            initModelStore.invoke(server); // sets up ModelManager; load_models is empty, so loads nothing

            String model = System.getProperty("imgclf.model", "");
            if (!model.isEmpty()) {
                loadAndWait(configManager, model);
            }

            Connector inference = configManager.getListener(false);
            Connector management = configManager.getListener(true);
            inference.clean();
            management.clean();
            boolean withManagement = !"false".equals(System.getProperty("imgclf.management", "true"));
            String modelsRoot = System.getProperty("imgclf.models_root", "");
            ModelUrlGuard guard = modelsRoot.isEmpty() ? null : new ModelUrlGuard(modelsRoot);
            @SuppressWarnings("unchecked")
            List<ChannelFuture> futures = (List<ChannelFuture>) field(server, "futures");
            futures.clear();
            if (!withManagement) {
                futures.add(bind(configManager, inference, groups, ConnectorType.INFERENCE_CONNECTOR, null));
            } else if (inference.equals(management)) {
                futures.add(bind(configManager, inference, groups, ConnectorType.BOTH, guard));
            } else {
                futures.add(bind(configManager, inference, groups, ConnectorType.INFERENCE_CONNECTOR, null));
                futures.add(bind(configManager, management, groups, ConnectorType.MANAGEMENT_CONNECTOR, guard));
            }
            MetricManager.scheduleMetrics(configManager);
            System.out.println("Model server started.");
            futures.get(0).sync();
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(1);
        } finally {
            groups.shutdown(true);
        }
        System.exit(0);
    }

    private static void loadAndWait(ConfigManager configManager, String model) throws Exception {
        String[] pair = model.split("=", 2);
        String name = pair[0];
        String url = pair[1];
        int workers = Integer.getInteger("imgclf.workers", configManager.getDefaultWorkers());
        int batchSize = Integer.getInteger("imgclf.batch_size", 1);
        int maxBatchDelay = Integer.getInteger("imgclf.max_batch_delay_ms", 100);
        String handler = System.getProperty("imgclf.handler", configManager.getMmsDefaultServiceHandler());
        ModelManager manager = ModelManager.getInstance();
        ModelArchive archive =
                manager.registerModel(
                        url,
                        name,
                        null,
                        handler,
                        batchSize,
                        maxBatchDelay,
                        configManager.getDefaultResponseTimeoutSeconds(),
                        name,
                        "false");
        manager.getStartupModels().add(archive.getModelName());
        manager.updateModel(archive.getModelName(), workers, workers);
        long started = System.nanoTime();
        long timeoutS = Long.getLong("imgclf.startup_timeout_s", 0L);
        while (loadedWorkers(manager, archive.getModelName()) == 0) {
            if (timeoutS > 0 && System.nanoTime() - started > timeoutS * 1_000_000_000L) {
                System.out.printf(
                        "imgclf: no worker loaded %s within the startup timeout of %d s "
                                + "(SAGEMAKER_STARTUP_TIMEOUT); see the worker log above for why. Exiting.%n",
                        name, timeoutS);
                System.out.flush();
                Runtime.getRuntime().halt(3);
            }
            Thread.sleep(50);
        }
        System.out.printf(
                "imgclf: %s loaded by a worker after %.2f s; opening the HTTP port%n",
                name, (System.nanoTime() - started) / 1e9);
    }

    /**
     * What ModelServer.initializeServer does (same socket options), plus ModelUrlGuard in front of MMS's handler
     * chain when a guard is given. Returns the channel's close future, as initializeServer does.
     */
    private static ChannelFuture bind(
            ConfigManager configManager,
            Connector connector,
            ServerGroups groups,
            ConnectorType type,
            ModelUrlGuard guard)
            throws Exception {
        SslContext ssl = connector.isSsl() ? configManager.getSslContext() : null;
        ServerInitializer mms = new ServerInitializer(ssl, type);
        ServerBootstrap b = new ServerBootstrap();
        b.option(ChannelOption.SO_BACKLOG, 1024)
                .channel(connector.getServerChannel())
                .childOption(ChannelOption.SO_LINGER, 0)
                .childOption(ChannelOption.SO_REUSEADDR, true)
                .childOption(ChannelOption.SO_KEEPALIVE, true)
                .childOption(ChannelOption.RCVBUF_ALLOCATOR, new FixedRecvByteBufAllocator(4096));
        b.group(groups.getServerGroup(), groups.getChildGroup());
        b.childHandler(
                new ChannelInitializer<Channel>() {
                    @Override
                    protected void initChannel(Channel ch) {
                        mms.initChannel(ch);
                        if (guard != null) {
                            ch.pipeline().addBefore("handler", "imgclf-model-url-guard", guard);
                        }
                    }
                });
        ChannelFuture bound = b.bind(connector.getSocketAddress()).sync();
        System.out.printf("imgclf: %s API bound to %s%n", type, connector.getSocketAddress());
        return bound.channel().closeFuture();
    }

    private static int loadedWorkers(ModelManager manager, String name) {
        int n = 0;
        for (WorkerThread worker : manager.getWorkers(name)) {
            if (worker.getState() == WorkerState.WORKER_MODEL_LOADED) {
                n++;
            }
        }
        return n;
    }

    private static Object field(Object target, String name) throws ReflectiveOperationException {
        Field f = target.getClass().getDeclaredField(name);
        f.setAccessible(true);
        return f.get(target);
    }
}
